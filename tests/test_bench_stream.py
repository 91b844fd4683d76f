"""The SSE stream parser (verify/stream.py) and the API-key header (verify/auth.py), pure Python."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_kit.verify.auth import auth_headers
from deploy_kit.verify.metrics import RequestRecord
from deploy_kit.verify.stream import StreamError, StreamState

pytestmark = pytest.mark.unit


def _body(pieces: list[str], *, chat: bool = False, done: bool = True, finish: str | None = "length",
          comments: bool = False) -> bytes:
    events = []
    for i, p in enumerate(pieces):
        ch: dict = {"index": 0, "delta": {"content": p}} if chat else {"index": 0, "text": p}
        if finish and i == len(pieces) - 1:
            ch["finish_reason"] = finish
        if comments:
            events.append(": keep-alive\n\n")
        events.append(f"data: {json.dumps({'choices': [ch]})}\n\n")
    usage = {"prompt_tokens": 3, "completion_tokens": len(pieces)}
    events.append(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n")
    if done:
        events.append("data: [DONE]\n\n")
    return "".join(events).encode()


def _parse(body: bytes, cuts: list[int], chat: bool = False, max_line: int = 2**20) -> RequestRecord:
    """Feed `body` split at `cuts`; the k-th read arrives at time k (so TTFT/ITL are countable)."""
    rec = RequestRecord(index=0)
    state = StreamState(rec, chat, 0.0, max_line)
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(body))), len(body)]
    for k, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False), start=1):
        if state.feed(body[a:b], float(k)):
            break
    state.finish(float(len(bounds)))
    return rec


text_piece = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(text_piece, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 4000), max_size=12),
       chat=st.booleans(), comments=st.booleans())
def test_any_split_of_a_stream_gives_the_same_text_and_counts(pieces, cuts, chat, comments):
    body = _body(pieces, chat=chat, comments=comments)
    rec = _parse(body, cuts, chat)
    assert rec.success and rec.error == ""
    assert rec.text == "".join(pieces)
    assert rec.output_len == len(pieces) and rec.prompt_len == 3 and rec.usage_from_server
    assert len(rec.itl) == len(pieces) - 1 and rec.ttft >= 1.0 and all(x >= 0 for x in rec.itl)


def test_timestamps_are_per_read():
    body = _body(["a", "b", "c"])
    first = body.index(b"\n\n") + 2                     # read 1: the first chunk only
    rec = _parse(body, [first])                          # read 2: everything else
    assert rec.ttft == 1.0 and rec.itl == [1.0, 0.0] and rec.latency == 2.0


@pytest.mark.parametrize("kw,reason", [
    ({"done": False, "finish": None}, "stream ended without [DONE] or finish_reason after 2 content chunks"),
    ({"finish": "abort"}, "server ended the request: finish_reason=abort"),
    ({"finish": "error", "done": False}, "server ended the request: finish_reason=error"),
])
def test_improper_ends_are_failures(kw, reason):
    with pytest.raises(StreamError) as exc:
        _parse(_body(["a", "b"], **kw), [])
    assert str(exc.value) == reason


@pytest.mark.parametrize("kw", [{"done": False}, {"finish": None}])
def test_done_or_finish_reason_alone_is_a_proper_end(kw):
    rec = _parse(_body(["a", "b"], **kw), [])
    assert rec.success and rec.text == "ab"


@pytest.mark.parametrize("line,reason", [
    (b"data: {oops", "malformed SSE chunk (not JSON): '{oops'"),
    (b"data: [1, 2]", "malformed SSE chunk (not an object): '[1, 2]'"),
    (b'data: {"choices": [5]}', "malformed SSE chunk (choices): '{\"choices\": [5]}'"),
    (b'data: {"choices": [{"text": 7}]}',
     "malformed SSE chunk (text is not a string): '{\"choices\": [{\"text\": 7}]}'"),
    (b'data: {"error": {"message": "overloaded"}}', "stream error: overloaded"),
    (b'data: \xff\xfe', "malformed SSE chunk (not JSON): '\ufffd\ufffd'"),
])
def test_malformed_chunks_name_the_chunk(line, reason):
    with pytest.raises(StreamError) as exc:
        _parse(line + b"\n\n", [])
    assert str(exc.value) == reason


def test_a_line_over_the_cap_fails_with_or_without_newline():
    with pytest.raises(StreamError) as exc:
        _parse(b"data: " + b"x" * 100, [10, 50], max_line=64)
    assert str(exc.value) == "SSE line longer than 64 bytes without a newline"
    with pytest.raises(StreamError) as exc:
        _parse(b"data: " + b"x" * 100 + b"\n", [], max_line=64)
    assert str(exc.value) == "SSE line of 106 bytes (limit 64)"


def test_stream_ending_inside_a_line_or_with_no_content():
    with pytest.raises(StreamError) as exc:
        _parse(_body(["a"], done=False, finish="length") + b'data: {"cho', [])
    assert str(exc.value) == "stream ended inside a line: '" + 'data: {"cho' + "'"
    with pytest.raises(StreamError) as exc:
        _parse(b"data: [DONE]\n\n", [])
    assert str(exc.value) == "zero-length output"


def test_garbage_usage_is_a_failure_not_a_crash():
    body = b'data: {"choices": [{"text": "a", "finish_reason": "stop"}]}\n\n' \
           b'data: {"choices": [], "usage": {"completion_tokens": "many"}}\n\ndata: [DONE]\n\n'
    with pytest.raises(StreamError) as exc:
        _parse(body, [])
    assert str(exc.value) == "malformed usage: {'completion_tokens': 'many'}"


@pytest.mark.parametrize("value,expected", [
    (None, {}), ("", {}), ("   ", {}), ("\t\n", {}),
    ("sk-1", {"Authorization": "Bearer sk-1"}), ("  sk-2 ", {"Authorization": "Bearer sk-2"}),
])
def test_auth_headers_from_vllm_api_key(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("VLLM_API_KEY", raising=False)
    else:
        monkeypatch.setenv("VLLM_API_KEY", value)
    assert auth_headers() == expected
