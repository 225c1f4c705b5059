"""How much the RL rollouts vary their statements (README, "Credit per step").

RL can only choose between statements its rollouts write. This samples ``--rollouts``
completions for each of the first ``--prompts`` train questions from the warm-up model of a
finished ``mmboundary demo`` run, at the RL stage's temperature, parses the steps with the one
parser and prints one JSON line: among step contents written by two or more rollouts of the same
prompt, the share whose statements differ, and the count of each stated value. The README's
numbers were made with:

    python examples/statement_exploration.py runs/val-seed0

(a run of ``configs/demo_validation.yaml``, seed 0; 64 prompts x 4 rollouts at 0.7).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished demo run folder (has sft-mmboundary/)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=None,
                        help="default: the run's rl_temperature")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from mmboundary.models.vlm import VLM
    from mmboundary.text import parse_steps
    from mmboundary.training.rl import load_rl_samples, sample_image
    from mmboundary.training.rl_config import RLConfig

    config = json.loads((args.run / "demo_config.json").read_text())
    torch.set_num_threads(config["threads"])
    model = json.loads((args.run / "sft-mmboundary" / "done.json").read_text())["model"]
    samples = load_rl_samples(RLConfig(model=model, train_file=str(args.run / "world" / "train.json"),
                                       max_samples=args.prompts))
    vlm = VLM.from_pretrained(model, device="cpu", dtype="float32")
    temperature = config["rl_temperature"] if args.temperature is None else args.temperature
    generations = vlm.generate(samples, [sample_image(s, None) for s in samples],
                               max_new_tokens=config["max_new_tokens"], do_sample=True,
                               temperature=temperature, num_return_sequences=args.rollouts,
                               seed=args.seed, batch_size=config["batch_size"])
    stated: dict[tuple[int, str], list] = defaultdict(list)
    for index, generation in enumerate(generations):  # prompt-major
        for step in parse_steps(generation.text):
            content = generation.text[step.start:step.content_end or step.end]
            stated[(index // args.rollouts, content)].append(step.expressed_confidence)
    shared = [values for values in stated.values() if len(values) >= 2]
    differ = sum(len(set(values)) > 1 for values in shared)
    counts = Counter(str(v) for values in stated.values() for v in values)
    print(json.dumps({"prompts": len(samples), "rollouts": args.rollouts,
                      "temperature": temperature, "shared_step_contents": len(shared),
                      "statements_differ": differ,
                      "share_differ": round(differ / len(shared), 3) if shared else None,
                      "stated_values": dict(sorted(counts.items()))}))


if __name__ == "__main__":
    main()
