package s3server

import (
	"os/exec"
	"syscall"
)

// setParentDeath makes the kernel kill versitygw when the test binary dies, so a crashed or
// killed test run leaves no server behind.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
