#!/usr/bin/env bash
# Regenerates official-gru4rec.pt (a model file made by the official GRU4Rec code itself),
# official-gru4rec.reference.pt (its weights and item ids as the official code reads them back, and
# the official forward's scores of every step of five training sessions) and official-init.pt (the
# official compatibility-mode initial weights of a 7-item, layer-4 model, which
# benchmarks/parity_official.py --init official reproduces).
#   OFFICIAL=path/to/GRU4Rec_PyTorch_Official PY=path/to/venv/bin/python [OUT=folder] tests/data/foreign/make_official.sh
# OUT (default: this folder) is where the two files go; the slow tests write fresh ones to a temporary folder.
# The venv needs torch, numpy<2, pandas<3 and joblib (the official code's own requirements). The model:
# 60 MovieLens-100K users as sessions, layer 16, cross-entropy, 1 epoch, a 1,000-sample store (a small file).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-$here}"
data="$(cd "$here/../../../.." && pwd)/shared/data/ml-100k/ml-100k.inter"
work="$(mktemp -d)"
"$PY" - "$data" "$work/train.tsv" <<'PY'
import sys
import pandas as pd
d = pd.read_csv(sys.argv[1], sep="\t")
d.columns = ["SessionId", "ItemId", "rating", "Time"]
d = d[d.SessionId <= 60].sort_values(["SessionId", "Time"], kind="stable")
d[["SessionId", "ItemId", "Time"]].to_csv(sys.argv[2], sep="\t", index=False)
PY
(cd "$OFFICIAL" && "$PY" run.py "$work/train.tsv" -d cpu -ss 1000 -s "$out/official-gru4rec.pt" -ps \
  "loss=cross-entropy,layers=16,batch_size=16,n_epochs=1,constrained_embedding=True,n_sample=64,sample_alpha=0.5,learning_rate=0.05,momentum=0.0,dropout_p_embed=0.0,dropout_p_hidden=0.0,bpreg=0,elu_param=0,logq=1")
(cd "$OFFICIAL" && "$PY" - "$out" "$work/train.tsv" <<'PY'
import sys
import torch
g = torch.load(f"{sys.argv[1]}/official-gru4rec.pt", weights_only=False, map_location="cpu")  # trusted: made above
ids = [str(i) for i in g.data_iterator.itemidmap.sort_values().index.values]
# the official forward's scores of the first 10 steps of the first 5 training sessions (eval mode: no dropout)
import pandas as pd
data = pd.read_csv(sys.argv[2], sep="\t", dtype={"ItemId": str})
sessions = [list(group["ItemId"])[:11] for _, group in list(data.groupby("SessionId", sort=True))[:5]]
g.model.eval()
scores = []
with torch.no_grad():
    for session in sessions:
        H = [torch.zeros((1, size)) for size in g.layers]
        for item in session[:-1]:
            X = torch.tensor([g.data_iterator.itemidmap[item]], dtype=torch.int64)
            scores.append(g.model(X, H, None, training=False)[0].clone())
torch.save({"state_dict": dict(g.model.state_dict()), "item_ids": ids, "sessions": sessions,
            "scores": torch.stack(scores)}, f"{sys.argv[1]}/official-gru4rec.reference.pt")
PY
)
(cd "$OFFICIAL" && "$PY" - "$out" <<'PY'
import sys
import torch
from gru4rec_pytorch import GRU4RecModel
model = GRU4RecModel(7, [4])
model._reset_weights_to_compatibility_mode()  # what fit() does by default
torch.save({name: value.detach().clone() for name, value in model.state_dict().items()},
           f"{sys.argv[1]}/official-init.pt")
PY
)
rm -rf "$work"
