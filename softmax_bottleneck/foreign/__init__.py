"""Models trained elsewhere, read without running their code.

- :mod:`.archive`: the restricted reader of any ``torch.save`` archive (lists a pickle's imports
  with ``pickletools``, resolves only an allow-list, refuses the rest with one line);
- :mod:`.official`: the official GRU4Rec's ``savemodel`` file (weights, item ids, settings), and
  the same model as this toolkit's GRU4Rec (:func:`.official.native_model`: the official forward's
  scores exactly);
- :mod:`.recbole`: RecBole 1.2.1 GRU4Rec and SASRec checkpoints (weights, settings), and both
  models' replay of RecBole's sequence states (equal to its ``full_sort_predict``).

Still to come (issue 16): RecBole's item-id map rebuilt from the
atomic file, adapters to the toolkit's model interface, and ``--checkpoint-format`` in every tool.
"""
