"""The benchmark harness behind ``fasttun bench``: scenarios that measure fasttun next to its baselines in the
same run (a C per-packet loop, python-pytun), alternating runs, medians and spread, a table and JSON.

Modules: ``results`` (samples, rows, medians), ``system`` (privileges, tools, namespaces, C baselines),
``packets`` (the packets the scenarios send), one module per scenario (``pair``, ``rx``, ``tx``, ``latency``,
``forward``), ``runner`` (alternation and progress), ``report`` (table and JSON), ``info`` (``fasttun info``)."""
