"""How every Python test stops a jobqd it started (not a test file).

A first SIGTERM lets running opcodes finish (--shutdown-grace); a second,
half a second later, interrupts them at once, so no test waits out a grace
period. A daemon that still has not exited is killed: the caller's check
of the exit code then says so."""
import signal
import subprocess


def stop_jobqd(proc, timeout=30):
    """Stop proc (a subprocess.Popen of jobqd); returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(0.5)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
