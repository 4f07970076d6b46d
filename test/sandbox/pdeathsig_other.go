//go:build !linux

package main

import "os/exec"

// setPdeathsig does nothing where the kernel offers no parent-death signal; there a killed
// sandbox can leave its bridge running until it is stopped by hand.
func setPdeathsig(*exec.Cmd) {}
