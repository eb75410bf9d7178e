# lvsprobe lab, stage 2: PID 1 (bash) on the host's read-only root.
# Starts the guest agent (`python -m lvsprobe.lab.agent`), which serves the host over
# virtio-serial until told to shut down; then powers the VM off (qemu exits).
# bash as PID 1 also reaps orphaned daemons while it waits.
# Kernel arguments: lab.python=INTERPRETER lab.pypath=DIR (holds lvsprobe/) lab.path=PATH
# lab.numpy_off=FEATURE (numpy's dispatched CPU features to turn off: see vm.py TCG_NUMPY_OFF).
# Builtins only where possible: under TCG every exec from the 9p root costs 0.05-0.3 s.
read -r cmdline </proc/cmdline
PY=python3
for a in $cmdline; do
  case $a in
    lab.python=*) PY=${a#*=} ;;
    lab.pypath=*) export PYTHONPATH=${a#*=} ;;
    lab.path=*) export PATH=${a#*=} ;;
    lab.numpy_off=*) export NPY_DISABLE_CPU_FEATURES=${a#*=} ;;
  esac
done
export HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TERM=dumb
mkdir -p /run/netns /run/lab
exec </dev/null >/dev/console 2>&1
"$PY" -S -m lvsprobe.lab.agent   # -S: no site-packages .pth processing (~8 s under TCG)
echo "lab-stage2: agent exited with status $?"
sync
echo o >/proc/sysrq-trigger
