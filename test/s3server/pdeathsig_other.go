//go:build !linux

package s3server

import "os/exec"

// setParentDeath does nothing where the kernel offers no parent-death signal; Stop, run by the
// test's cleanup, ends the process instead.
func setParentDeath(*exec.Cmd) {}
