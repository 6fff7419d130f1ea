"""One exception hierarchy for the whole bridge (callers catch ``BridgeError``)."""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class FencedError(BridgeError):
    """Another instance has taken over this one's work (a checkpoint, a transactional id):
    this one must stop at once, sending and saving nothing more (exit 1)."""


class ConfigError(BridgeError):
    """The configuration (file, kubeconfig, environment) is unusable."""


class ApiError(BridgeError):
    """The Kubernetes API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str, path: str = "", *,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}" + (f" ({path})" if path else ""))
        self.status = status
        self.reason = reason
        self.message = message
        self.path = path
        self.retry_after = retry_after  # seconds the server asked to wait (429/503 Retry-After)

    @property
    def gone(self) -> bool:
        """410: the resourceVersion (or continue token) is older than the server's history."""
        return self.status == 410 or self.reason in ("Expired", "Gone")

    @property
    def forbidden(self) -> bool:
        """403: this identity may not do it (a 401 is about the credentials themselves, not
        one kind: retried with backoff while the transport refreshes them)."""
        return self.status == 403

    @property
    def not_found(self) -> bool:
        return self.status == 404


class TransportError(BridgeError):
    """The connection to the API server failed or went silent (transient)."""
