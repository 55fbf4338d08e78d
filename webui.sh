#!/usr/bin/env bash
#
# Start the web UI on Linux and macOS: create/activate a Python venv, then run launch.py,
# which installs what is missing and starts webui.py. Arguments are passed to launch.py.
# Override the settings below in webui-user.sh (next to this file) or in the environment.
#
#   python_cmd     Python used to create the venv            (default: python3)
#   venv_dir       venv location, relative to this folder;   (default: venv)
#                  "-" means use python_cmd as it is, no venv
#   LAUNCH_SCRIPT  script to run                              (default: launch.py)
#   COMMANDLINE_ARGS, TORCH_COMMAND, TORCH_INDEX_URL, INDEX_URL, REQS_FILE: read by launch.py

# Work from the folder that holds this script, whatever the caller's cwd.
script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)" || exit 1
cd -- "$script_dir" || exit 1

if [[ -f webui-user.sh ]]; then
    # shellcheck source=webui-user.sh
    source ./webui-user.sh
fi

python_cmd="${python_cmd:-python3}"
venv_dir="${venv_dir:-venv}"
LAUNCH_SCRIPT="${LAUNCH_SCRIPT:-launch.py}"

# launch.py reads these from the environment (webui-user.sh may set them unexported).
for name in COMMANDLINE_ARGS TORCH_COMMAND TORCH_INDEX_URL INDEX_URL REQS_FILE XFORMERS_PACKAGE; do
    if [[ -n "${!name+set}" ]]; then
        export "${name?}"
    fi
done

if [[ "$venv_dir" == "-" ]]; then
    python_exe="$python_cmd"
else
    if [[ ! -f "$venv_dir/bin/activate" ]]; then
        echo "Creating a Python venv in $venv_dir with $python_cmd"
        if ! "$python_cmd" -m venv "$venv_dir"; then
            echo "ERROR: could not create the venv in '$venv_dir' with '$python_cmd'." >&2
            echo "On Debian/Ubuntu install the venv module: sudo apt install python3-venv" >&2
            exit 1
        fi
    fi
    # shellcheck disable=SC1091
    source "$venv_dir/bin/activate" || exit 1
    python_exe="$venv_dir/bin/python"
fi

exec "$python_exe" "$LAUNCH_SCRIPT" "$@"
