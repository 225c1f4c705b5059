"""Where a model's hidden state knows whether a step is right: a linear probe at the step's last
content token and at the tokens after it (README, "Re-teaching only the statement tokens' rows").

Reads a model's own scored answers (the output of `mmboundary estimate`), judges their steps by
the demo's one rule set against the world split they answer, teacher-forces the model on its
answers and fits the cross-fitted step probe (`confidence.probe_teacher`, 5 folds over questions)
on the last-layer state at offset k after each step's last content token (0 = that token; 1 =
the statement's first token, "," in ", but I'm not sure"; the state at offset k chooses token
k + 1). Prints one line per offset: the cross-fitted AUROC.

    python examples/probe_positions.py MODEL ESTIMATES.jsonl TRAIN.json --offsets 0,1,2,3,4
"""

from __future__ import annotations

import argparse

from mmboundary.confidence.outputs import failed
from mmboundary.confidence.probe_teacher import fit_step_probe, step_rows
from mmboundary.data.io import read_responses
from mmboundary.demo.stages import label_steps
from mmboundary.models.vlm import VLM
from mmboundary.shapesworld.scenes import load_image, read_split
from mmboundary.text import align_steps_to_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("estimates", help="the model's own `mmboundary estimate` output")
    ap.add_argument("data", help="the world split the answers answer (train.json)")
    ap.add_argument("--offsets", default="0,1,2,3,4")
    ap.add_argument("--n", type=int, default=1000, help="answers used (the first N)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    offsets = [int(o) for o in args.offsets.split(",")]
    responses = [r for r in read_responses(args.estimates) if not failed(r)][: args.n]
    by_id = {s.id: s for s in read_split(args.data)}
    samples = [by_id[r.sample_id] for r in responses]
    labels = label_steps(samples, responses)
    vlm = VLM.from_pretrained(args.model, device="cpu", dtype="float32")
    states: dict[int, list] = {k: [] for k in offsets}
    for start in range(0, len(responses), 32):
        chunk, batch = responses[start:start + 32], samples[start:start + 32]
        passes = vlm.hidden_states(batch, [load_image(s) for s in batch], [r.text for r in chunk],
                                   batch_size=32)
        for response, (hidden, token_offsets) in zip(chunk, passes, strict=True):
            steps = [s.model_copy() for s in response.steps]
            align_steps_to_tokens(steps, token_offsets)
            for k in offsets:
                states[k].append([hidden[min(s.token_end - 1 + k, len(hidden) - 1)]
                                  if (s.token_end or 0) > (s.token_start or 0) else None
                                  for s in steps])
    for k in offsets:
        x, y, groups, _ = step_rows(states[k], labels, [r.sample_id for r in responses])
        probe, _ = fit_step_probe(x, y, groups, 5, args.seed)
        print(f"offset {k}: cross-fitted AUROC {probe.info['crossfit_auroc']:.3f} "
              f"({len(y)} steps, {len(set(groups))} questions)", flush=True)


if __name__ == "__main__":
    main()
