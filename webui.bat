@echo off
rem Start the web UI on Windows: create the venv if needed, then run launch.py.
rem Set PYTHON, VENV_DIR and COMMANDLINE_ARGS in webui-user.bat (which calls this file).
rem   PYTHON         Python used to create the venv (default: python)
rem   VENV_DIR       venv location (default: venv next to this file; "-" = no venv)
rem   LAUNCH_SCRIPT  script to run (default: launch.py)
rem   COMMANDLINE_ARGS, TORCH_COMMAND, TORCH_INDEX_URL, INDEX_URL, REQS_FILE: read by launch.py

pushd "%~dp0"

if not defined PYTHON set "PYTHON=python"
if not defined VENV_DIR set "VENV_DIR=%~dp0venv"
if not defined LAUNCH_SCRIPT set "LAUNCH_SCRIPT=launch.py"

if "%VENV_DIR%"=="-" goto :launch
if "%SKIP_VENV%"=="1" goto :launch
if exist "%VENV_DIR%\Scripts\python.exe" goto :activate_venv

echo Creating a Python venv in %VENV_DIR% with %PYTHON%
"%PYTHON%" -m venv "%VENV_DIR%"
if errorlevel 1 goto :venv_error

:activate_venv
call "%VENV_DIR%\Scripts\activate.bat"
set "PYTHON=%VENV_DIR%\Scripts\python.exe"

:launch
"%PYTHON%" "%LAUNCH_SCRIPT%" %*
set "EXIT_CODE=%ERRORLEVEL%"
popd
if not "%EXIT_CODE%"=="0" (
    echo.
    echo launch.py exited with code %EXIT_CODE%.
    pause
)
exit /b %EXIT_CODE%

:venv_error
echo.
echo ERROR: could not create the venv in "%VENV_DIR%" with "%PYTHON%".
echo Install Python 3.10-3.13 from python.org and tick "Add python.exe to PATH".
popd
pause
exit /b 1
