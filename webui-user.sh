#!/usr/bin/env bash
#########################################################
# Your settings for webui.sh, which sources this file.  #
# Uncomment and edit the lines you need.                #
#########################################################

# Arguments for the web UI (and launch.py), e.g. "--listen --api --xformers"
#export COMMANDLINE_ARGS=""

# Python used to create the venv
#python_cmd="python3"

# venv location, relative to the web UI folder ("-" = no venv: use python_cmd as it is)
#venv_dir="venv"

# Script that prepares the environment and starts the web UI
#export LAUNCH_SCRIPT="launch.py"

# pip command line that installs torch when it is missing (or with --reinstall-torch)
#export TORCH_COMMAND="pip install torch==2.14.1 torchvision==0.29.1"

# Extra wheel index for the default torch command (used on Windows with an NVIDIA GPU)
#export TORCH_INDEX_URL="https://download.pytorch.org/whl/cu130"

# pip index to use instead of PyPI (a mirror)
#export INDEX_URL=""

# Requirements file that launch.py checks and installs
#export REQS_FILE="requirements.txt"

###########################################
