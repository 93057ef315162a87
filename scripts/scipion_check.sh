#!/usr/bin/env bash
# make scipion-check: the plugin as a facility gets it, through Scipion's own entry points.
#   1. Scipion from its official installer (scipion-installer, venv flavour), cached in $SCIPION_CHECK_HOME
#   2. CPU torch into Scipion's Python (the README's line), then `scipion3 installp -p CHECKOUT --devel`
#   3. `scipion3 installb --help` offers nt2c; the plugin's import-time lookup is scipion-app's own
#   4. each template: fields filled through scipion-app's kickoff functions, the project created by
#      kickoff's own createProjectFromWorkflow (the launcher's command line), then scheduled with
#      Scipion's scheduler on one small simulated micrograph; outputs and run logs checked
#   5. `scipion3 uninstallp -p scipion-em-nt2c` removes it; installp again leaves it installed
# Network: PyPI only. Exit status non-zero on the first check that fails.
set -euo pipefail
CHECKOUT="$(cd "$(dirname "$0")/.." && pwd)"
HOME_DIR="${SCIPION_CHECK_HOME:-$CHECKOUT/.scipion-check}"
TORCH="${TORCH:-torch==2.13.0}"
PY="${PYTHON:-python3}"
mkdir -p "$HOME_DIR"
HOME_DIR="$(cd "$HOME_DIR" && pwd)"
say() { printf '\n== %s\n' "$*"; }

if [ ! -x "$HOME_DIR/scipion/scipion3" ]; then
    say "installing Scipion with scipion-installer into $HOME_DIR/scipion"
    "$PY" -m venv "$HOME_DIR/installer"
    "$HOME_DIR/installer/bin/pip" install --quiet scipion-installer virtualenv
    (cd "$HOME_DIR" && "$HOME_DIR/installer/bin/python" -m scipioninstaller "$HOME_DIR/scipion" -venv -noAsk)
fi
S="$HOME_DIR/scipion/scipion3"
cd "$HOME_DIR"  # not the checkout: there pip and Scipion find the checkout's own *.egg-info first
say "Scipion: $("$S" version 2>&1 | tail -1)"

say "CPU torch into Scipion's Python: scipion3 run pip install $TORCH"
"$S" run pip install --quiet "$TORCH"

# Scipion takes the plugin's pip name from the checkout folder's name
mkdir -p "$HOME_DIR/src"
ln -sfn "$CHECKOUT" "$HOME_DIR/src/scipion-em-nt2c"
say "scipion3 installp -p $HOME_DIR/src/scipion-em-nt2c --devel"
"$S" installp -p "$HOME_DIR/src/scipion-em-nt2c" --devel
say "scipion3 installb --help lists nt2c"
"$S" installb --help | grep -E "^nt2c "

say "scipion-em-relion for the facility template's RELION protocols"
"$S" run pip install --quiet scipion-em-relion
say "templates through scipion-app's kickoff code, scheduled on one micrograph"
DATA="$HOME_DIR/data"
rm -rf "$DATA" && mkdir -p "$DATA"
"$S" run nt2c simulate -o "$DATA/sim" --structure "$CHECKOUT/nt2c_core/data/$(ls "$CHECKOUT/nt2c_core/data" | grep -m1 -i apoferritin)" \
    --size 512 512 --pixel-size 2.0 --particles 8 --count 1 --quiet
mkdir -p "$DATA/mics" && cp "$DATA"/sim/noisy/*.mrc "$DATA/mics/"
SCIPION_CHECK_DATA="$DATA" "$S" python "$CHECKOUT/scripts/scipion_check_templates.py"

say "scipion3 uninstallp -p scipion-em-nt2c"
"$S" uninstallp -p scipion-em-nt2c
if "$S" python -c "import nt2c_scipion" 2>/dev/null; then echo "still importable after uninstallp"; exit 1; fi

say "a built wheel instead of the checkout: scipion3 run pip install scipion_em_nt2c-*.whl"
# scipion-app's installp takes a path as an editable source and a name from Scipion's plugin list
# (a published plugin), so a wheel goes in through Scipion's pip; its plugin discovery (entry
# points), installb's binary lookup and uninstallp must then work as for a devel install.
rm -rf "$HOME_DIR/wheel" && mkdir -p "$HOME_DIR/wheel"
"$S" run pip wheel --quiet --no-deps -w "$HOME_DIR/wheel" "$CHECKOUT"
"$S" run pip install --quiet --no-deps "$HOME_DIR"/wheel/scipion_em_nt2c-*.whl
"$S" installb --help | grep -E "^nt2c "
"$S" python -c "
from scipion.install.plugin_funcs import PluginRepository
owner = PluginRepository().getBinToPluginDict().get('nt2c')
assert owner == 'nt2c_scipion', owner
import nt2c_scipion, nt2c_core
print('wheel install: binary nt2c belongs to', owner, '- plugin', nt2c_scipion.__file__)"
"$S" uninstallp -p scipion-em-nt2c
if "$S" python -c "import nt2c_core" 2>/dev/null; then echo "nt2c_core still importable after uninstallp"; exit 1; fi
"$S" installp -p "$HOME_DIR/src/scipion-em-nt2c" --devel >/dev/null
say "scipion-check passed"
