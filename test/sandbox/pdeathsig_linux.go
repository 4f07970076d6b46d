package main

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel interrupt the bridge when the sandbox dies without stopping it
// (killed, or crashed), so that no bridge is left holding the port.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
