"""The one exception tree of the consumer library."""

from __future__ import annotations


class ConsumerError(Exception):
    """Base of every error this library raises."""


class DecodeError(ConsumerError):
    """A message is not a CloudEvent of the bridge (counted and skipped, never raised out of
    ``Informer.run``; raised by the ``decode_*`` functions)."""


class HandlerError(ConsumerError):
    """A handler raised: ``Informer.run`` stops without committing the batch, so a restart
    hands the same changes to the handlers again (at least once). ``__cause__`` is the
    handler's exception."""


class SourceError(ConsumerError):
    """The broker refused or failed (connection, missing stream, bad settings)."""
