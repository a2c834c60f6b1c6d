"""The stages of the paper, each a config dataclass, an objective and a ``run()``.

============  ==========================  ==========================================
stage         module                      command
============  ==========================  ==========================================
0 and 3       :mod:`.finetune`            ``slimdiar finetune`` (3: pruned backbone)
1             :mod:`.prune`               ``slimdiar prune``
2             :mod:`.distill`             ``slimdiar distill``
(optional)    :mod:`.pretrain`            ``slimdiar pretrain``
============  ==========================  ==========================================

Every ``run()`` builds its objective and hands it to the one loop,
:class:`slimdiar.train.Trainer`; what the stages share is in :mod:`.common`, the report of a
pruning run in :mod:`.report`. Imports go one way: stages use :mod:`slimdiar.train`,
:mod:`slimdiar.models` and :mod:`slimdiar.data`, never the reverse.
"""
