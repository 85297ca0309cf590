"""Tests of the suite that fail at this branch's base for reasons outside issue 10's list; the suites that run
subsets in subprocesses (test_sanitized_extension.py, test_python_versions.py) leave them out. Empty this list
once the fix is merged."""

KNOWN_FAILING = [
    # A race in aio.py: after `break`, the reader thread reads on and the packets it takes are lost (fails on
    # 3.9, 3.11 and 3.13 on an idle machine; aio.py is being rewritten on the aio branch).
    "tests/test_aio.py::test_the_reader_stops_when_the_consumer_leaves",
]
