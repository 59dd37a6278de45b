"""The producers' partitioner puts every key where the Java client's default partitioner does
(co-partitioning of the saga's inputs depends on it), remembered hashes or not."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from agg_kafka.clients import KeyPartitioner, player_key


def test_remembered_or_not_a_key_goes_where_the_default_partitioner_puts_it() -> None:
    default = DefaultPartitioner()
    partitioner = KeyPartitioner(key_count_max=50)
    keys = [player_key(f"op-{i % 3}", f"player-{i}") for i in range(200)] + [b"", b"\x00\xff"]
    for count in (1, 3, 12, 7, 12):
        partitions = list(range(count))
        for key in keys + keys:  # the second time from memory (or after it started afresh)
            assert partitioner(key, partitions, partitions) == default(key, partitions, partitions)
    assert len(partitioner._hashes) <= 50


def test_no_key_goes_to_some_available_partition() -> None:
    assert KeyPartitioner()(None, [0, 1, 2], [2]) == 2
