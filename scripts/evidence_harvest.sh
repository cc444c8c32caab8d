#!/usr/bin/env bash
# After a call of scripts/evidence_campaign.sh: bring the finished runs of its archive into
# results/evidence/<profile>/ and render the campaign's tables and figures from everything committed there.
#   bash scripts/evidence_harvest.sh PATH/TO/evidence.tgz [...]
# - a run (<config>/fold<k>) is added only when it finished (eval/summary.json); a run already there is kept, never
#   replaced: a finished run is read, never retrained or overwritten;
# - a run of the length check (length10k/<config>/fold0) likewise;
# - the landscape, sharpness and calibration numbers (landscape_fold<k>/*.json, csv, md) go to landscape/;
# - prints what came in, the software versions of the call, how many of the 25 runs are in, and the tail of the
#   campaign's log; then renders notebooks 04 and 05 (uu/params/evidence.yaml) and copies their tables and figures
#   beside the runs, and the README's results block (scripts/readme_results.py). The Progress table of the
#   campaign's README is written by hand from what this prints.
# UU_EVIDENCE_DIR: another destination folder; UU_RENDER=0: add the runs, render nothing.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash scripts/evidence_harvest.sh PATH/TO/evidence.tgz [...]" >&2; exit 2; }
archives=()
for archive in "$@"; do archives+=("$(realpath -m "$archive")"); done  # paths as given, before the cd
cd "$(dirname "$0")/.."
DEST=${UU_EVIDENCE_DIR:-results/evidence/acdc2d_cv5}
PY=${UU_PYTHON:-.venv/bin/python}
mkdir -p "$DEST"
for archive in "${archives[@]}"; do
  [ -f "$archive" ] || { echo "error: $archive: no such archive (the evidence.tgz a campaign call brings back)" >&2; exit 2; }
  tmp=$(mktemp -d)
  tar xzf "$archive" -C "$tmp"
  echo "== $archive"
  for summary in "$tmp"/*/fold*/eval/summary.json "$tmp"/length*/*/fold*/eval/summary.json; do
    [ -e "$summary" ] || continue
    run=$(dirname "$(dirname "$summary")"); rel=${run#"$tmp"/}
    if [ -e "$DEST/$rel/eval/summary.json" ]; then
      echo "kept   $rel (already in $DEST)"
    else
      mkdir -p "$DEST/$rel"; cp -r "$run"/. "$DEST/$rel/"; echo "added  $rel"
    fi
  done
  for unfinished in "$tmp"/unfinished/*/fold* "$tmp"/unfinished/length*/*/fold*; do
    [ -d "$unfinished" ] && echo "unfinished ${unfinished#"$tmp"/unfinished/} (not added)"
  done
  for lf in "$tmp"/landscape_fold*/; do
    [ -e "$lf/landscape.json" ] || continue
    mkdir -p "$DEST/landscape"  # the numbers; the figures are drawn from them by notebook 05
    for f in "$lf"/*.json "$lf"/*.csv "$lf"/*.md; do [ -e "$f" ] && cp "$f" "$DEST/landscape/"; done
    echo "added  landscape (${lf#"$tmp"/})"
  done
  [ -e "$tmp/versions.txt" ] && sed 's/^/versions: /' "$tmp/versions.txt"
  [ -e "$tmp/campaign.log" ] && tail -n 12 "$tmp/campaign.log"
  rm -rf "$tmp"
done
n=$(find "$DEST" -path '*/fold*/eval/summary.json' -not -path '*/length10k/*' | wc -l)
echo "runs in: $n of 25"
for fold in 0 1 2 3 4; do
  printf 'fold %s:' $fold
  for config in unet_dice_ce umamba_dice_ce umamba_ce umamba_ua umamba_ua_sam; do
    [ -e "$DEST/$config/fold$fold/eval/summary.json" ] && printf ' %s' $config
  done
  echo
done
for long in "$DEST"/length*/; do  # the length check (fold 0 trained longer)
  [ -d "$long" ] && echo "length check $(basename "$long"): $(cd "$long" && ls -d */fold*/eval 2>/dev/null | cut -d/ -f1,2 | tr '\n' ' ')"
done
[ "${UU_RENDER:-1}" = 0 ] && exit 0
rm -rf runs/evidence_render
"$PY" -m uu run --params evidence --out runs/evidence_render
cp -r runs/evidence_render/results/. "$DEST/"
echo "rendered into $DEST: $(cd runs/evidence_render/results && ls | tr '\n' ' ')"
[ "$DEST" = results/evidence/acdc2d_cv5 ] && "$PY" scripts/readme_results.py  # the README's numbers are the campaign's
