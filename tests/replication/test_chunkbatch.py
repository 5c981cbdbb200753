"""PutChunks messages built as wire bytes (agent.replication.chunkbatch) parse, with the
generated class, into exactly the message they describe: for any session id, chunks and
group frames, and lengths that need multi-byte varints."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.replication.chunkbatch import PUT_CHUNKS, ChunkBatch
from asrpb import replication_pb2, replication_pb2_grpc

_frame = st.one_of(st.binary(max_size=300), st.integers(0, 70_000).map(lambda n: bytes([n % 251]) * n))


@settings(max_examples=200, deadline=None)
@given(session=st.text(max_size=40),
       items=st.lists(st.one_of(st.tuples(st.binary(min_size=32, max_size=32), _frame), _frame), max_size=12))
def test_a_batch_parses_into_the_message_it_describes(session: str, items: list[object]) -> None:
    msg = ChunkBatch(session)
    want = replication_pb2.ChunkBatch(session_id=session)
    for item in items:
        if isinstance(item, tuple):
            msg.add(*item)
            want.ids.append(item[0])
            want.frames.append(item[1])
        else:
            assert isinstance(item, bytes)
            msg.add_group(item)
            want.groups.append(item)
    assert msg.parsed() == want
    assert bool(msg) == bool(want.ids or want.groups)
    assert (msg.chunks, msg.groups) == (len(want.ids), len(want.groups))


def test_the_method_path_is_the_generated_stubs() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.paths: list[str] = []

        def _record(self, path: str, **_: object) -> None:
            self.paths.append(path)

        unary_unary = unary_stream = stream_unary = stream_stream = _record

    ch = Recorder()
    replication_pb2_grpc.ReplicationStub(ch)  # type: ignore[arg-type]
    assert PUT_CHUNKS in ch.paths
