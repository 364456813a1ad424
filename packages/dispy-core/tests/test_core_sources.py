"""Code shipped by value keeps its file name, and its source text can travel and be shown
in tracebacks (serialization's code reducer, dispy_core.sources, the sources fields)."""

import linecache
import traceback

import cloudpickle
import pytest

from dispy_core import messages, serialization, sources
from dispy_core.codec import decode_body

HERE = __file__


def test_code_keeps_its_file_name_and_reports_it():
    def outer(n):
        def inner(x):
            return 1 / x

        return (lambda y: inner(y))(n)

    class Thing:
        def method(self):
            return outer(0)

    files: set[str] = set()
    thing = serialization.loads(serialization.dumps(Thing, files))
    # Whatever the installed cloudpickle writes (3.1.3 writes "<dynamic-code>").
    assert files == {HERE}, cloudpickle.__version__
    assert thing.method.__code__.co_filename == HERE
    with pytest.raises(ZeroDivisionError) as info:
        thing().method()
    frames = traceback.extract_tb(info.value.__traceback__)[1:]
    assert [(f.filename, f.name) for f in frames] == [
        (HERE, "method"), (HERE, "outer"), (HERE, "<lambda>"), (HERE, "inner")]
    assert frames[-1].line == "return 1 / x"


def test_code_marshal_cannot_write_still_travels():
    def f():
        return 1

    odd = f.__code__.replace(co_consts=(*f.__code__.co_consts, frozenset({object})))
    files: set[str] = set()
    back = serialization.loads(serialization.dumps(odd, files))  # cloudpickle's reducer
    assert back.co_name == "f" and back.co_firstlineno == f.__code__.co_firstlineno


def test_read_sources_takes_files_and_linecache_entries():
    cell = "<notebook-cell-7>"
    linecache.cache[cell] = (10, None, ["x = 1\n", "y = 2\n"], cell)  # as IPython registers cells
    # "<string>" is left out even with text in linecache (Python 3.13 puts python -c's
    # there; pytest-xdist starts its workers with python -c)
    added = "<string>" not in linecache.cache
    linecache.cache.setdefault("<string>", (5, None, ["z = 3\n"], "<string>"))
    try:
        found = sources.read_sources([HERE, cell, "<string>", "/no/such/file.py", ""])
        assert sorted(found) == sorted([HERE, cell])
        with open(HERE) as fh:
            assert found[HERE] == fh.read()
        assert found[cell] == "x = 1\ny = 2\n"
        assert sources.read_sources([HERE, cell], skip={HERE}) == {cell: "x = 1\ny = 2\n"}
    finally:
        del linecache.cache[cell]
        if added:
            del linecache.cache["<string>"]


def test_read_sources_leaves_out_huge_files(tmp_path, monkeypatch):
    big = tmp_path / "generated.py"
    big.write_text("x = 1\n" * 100)
    monkeypatch.setattr(sources, "MAX_SOURCE_CHARS", 599)
    assert sources.read_sources([str(big)]) == {}
    monkeypatch.setattr(sources, "MAX_SOURCE_CHARS", 600)
    assert sources.read_sources([str(big)]) == {str(big): "x = 1\n" * 100}


@pytest.mark.parametrize("bad", [
    None, [], "text", {1: "x"}, {"": "x"}, {"a\0b": "x"}, {"f.py": b"bytes"}, {"f.py": None},
    {"x" * (sources.MAX_NAME_CHARS + 1): "x"},
])
def test_check_sources_refuses_malformed_fields(bad):
    with pytest.raises(ValueError, match="sources"):
        sources.check_sources(bad)


def test_installed_sources_show_in_tracebacks_and_stay():
    name = "/client/only/prog.py"  # a file this machine doesn't have
    text = "def f(n):\n    x = 'a\x0cb'\n    return 1 / n"  # a form feed; no final newline
    namespace: dict = {}
    exec(compile(text, name, "exec"), namespace)
    sources.install_sources(sources.check_sources({name: text}))
    try:
        linecache.checkcache()  # as traceback does: entries from a client are kept
        with pytest.raises(ZeroDivisionError) as info:
            namespace["f"](0)
        frame = traceback.extract_tb(info.value.__traceback__)[-1]
        assert (frame.filename, frame.lineno, frame.line) == (name, 3, "return 1 / n")
    finally:
        del linecache.cache[name]


def test_sources_fields_travel():
    compute = messages.Compute("c", "f", "function", [b"p"], [b"s"], sources={"/p/prog.py": "x = 1\n"})
    body, _ = messages.encode(compute)
    back = messages.decode(compute.TYPE, memoryview(b"".join(bytes(b) for b in body)))
    assert back == compute
    spec = messages.JobSpec(1, [b"a"], sources={"/p/mod.py": "y = 2\n"})
    job_body, _ = messages.encode(messages.SubmitJobs("c", [spec]))
    assert decode_body(memoryview(b"".join(bytes(b) for b in job_body)))["jobs"] == [spec]
    assert messages.JobSpec(2, [b"a"]).sources == {}
