#!/usr/bin/env bash
# Is the demo's table unchanged by a refactor? Runs `mmboundary demo --quick` at REV (a git
# worktree, imported from its own src/) and in this checkout, then compares every metric of every
# system the two have in common and diffs the tables. Options after REV go to this checkout's run
# only (to restore settings whose defaults changed since REV), e.g.:
#   bash benchmarks/table_unchanged.sh 23b3bbd --level-rule quantile --sft-lr 0.001 \
#       --no-guided --no-diagnostics --rl-eval-every 0
# Exit status 0 = identical, 1 = differences (printed). Writes under ${OUT:-/tmp/table_unchanged}.
set -euo pipefail
rev=${1:?usage: table_unchanged.sh REV [options for the run of this checkout]}; shift
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/table_unchanged}
rm -rf "$out" && mkdir -p "$out"
git -C "$repo" worktree add --detach "$out/src-$rev" "$rev" > /dev/null
trap 'git -C "$repo" worktree remove --force "$out/src-$rev"' EXIT
(cd "$out/src-$rev" && PYTHONPATH="$out/src-$rev/src" python -m mmboundary demo --quick \
    --out "$out/old" --threads 2 > "$out/old.log" 2>&1)
(cd "$repo" && python -m mmboundary demo --quick --out "$out/new" --threads 2 "$@" \
    > "$out/new.log" 2>&1)
python - "$out" <<'PY'
import glob, json, sys
out = sys.argv[1]
def load(run):
    rows = {}
    for path in glob.glob(f"{out}/{run}/metrics/*.json"):
        if not path.endswith("done.json"):
            result = json.load(open(path))
            rows[result["system"]] = result["metrics"]
    return rows
old, new = load("old"), load("new")
common = sorted(set(old) & set(new))
diffs = [(s, m, old[s].get(m), new[s].get(m)) for s in common
         for m in sorted(set(old[s]) | set(new[s])) if old[s].get(m) != new[s].get(m)]
for row in diffs:
    print("differs:", *row)
print(f"{len(common)} systems in both, {len(diffs)} metric differences; only at the old "
      f"revision: {sorted(set(old) - set(new))}; only here: {sorted(set(new) - set(old))}")
sys.exit(1 if diffs else 0)
PY
