"""How a world command line is carried into a server's image (tests/env/images.py)."""

from __future__ import annotations

from tests.env.images import ServerImage


def test_host_paths_of_the_builds_become_the_image_paths() -> None:
    kafka = ServerImage("sha256:x", (("/usr/bin/java", "/usr/bin/java"),
                                     ("/c/kafka-2.13-3.9.2/libs", "/opt/kafka/libs")))
    argv = ["/usr/bin/java", "-Xmx1g", "-cp", "/c/kafka-2.13-3.9.2/libs/*", "kafka.Kafka",
            "/tmp/w/kafka/server.properties"]
    assert kafka.translate(argv) == ["/usr/bin/java", "-Xmx1g", "-cp", "/opt/kafka/libs/*",
                                     "kafka.Kafka", "/tmp/w/kafka/server.properties"]


def test_paths_inside_options_are_translated_and_others_kept() -> None:
    etcd = ServerImage("sha256:y", (("/c/bin/etcd-v3.6.6", "/usr/local/bin/etcd"),))
    argv = ["/c/bin/etcd-v3.6.6", "--data-dir=/tmp/w/etcd/data", "--name=keb"]
    assert etcd.translate(argv) == ["/usr/local/bin/etcd", "--data-dir=/tmp/w/etcd/data",
                                    "--name=keb"]
