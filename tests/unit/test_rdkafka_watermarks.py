"""The saga's restore reads its state topic to the end: a watermark query that fails retriably
(no leader yet on a topic just created, a leader moving) is retried, a fatal one is not."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from agg_kafka import rdkafka


class Reader:
    def __init__(self, answers: list[Any]):
        self.answers = answers
        self.calls = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, int):
            raise KafkaException(KafkaError(answer))
        return answer  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rdkafka.time, "sleep", lambda s: None)


def test_not_leader_then_an_answer() -> None:
    reader = Reader([KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                     (3, 9)])  # fmt: skip
    assert rdkafka._watermarks(reader, TopicPartition("t", 0)) == (3, 9)
    assert reader.calls == 3


def test_gives_up_after_the_bound() -> None:
    reader = Reader([KafkaError.NOT_LEADER_FOR_PARTITION] * rdkafka.WATERMARK_ATTEMPTS_MAX)
    with pytest.raises(KafkaException):
        rdkafka._watermarks(reader, TopicPartition("t", 0))
    assert reader.calls == rdkafka.WATERMARK_ATTEMPTS_MAX


def test_a_non_retriable_error_is_raised_at_once() -> None:
    reader = Reader([KafkaError.TOPIC_AUTHORIZATION_FAILED, (0, 1)])
    with pytest.raises(KafkaException):
        rdkafka._watermarks(reader, TopicPartition("t", 0))
    assert reader.calls == 1
