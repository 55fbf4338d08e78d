@echo off
rem Your settings for webui.bat. Edit, then double-click this file to start the web UI.

rem Python used to create the venv (empty: python on PATH)
set PYTHON=
rem venv location (empty: venv next to webui.bat; "-" = no venv)
set VENV_DIR=
rem Arguments for the web UI, e.g. --listen --api --xformers
set COMMANDLINE_ARGS=

rem pip command line that installs torch when it is missing (or with --reinstall-torch).
rem The default adds the CUDA wheel index when an NVIDIA GPU is found (nvidia-smi).
rem set TORCH_COMMAND=pip install torch==2.14.1 torchvision==0.29.1 --extra-index-url https://download.pytorch.org/whl/cu130
rem set TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
rem pip index to use instead of PyPI (a mirror)
rem set INDEX_URL=
rem Requirements file that launch.py checks and installs
rem set REQS_FILE=requirements.txt

call webui.bat
