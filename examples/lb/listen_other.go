//go:build !linux

package main

import (
	"errors"
	"os"
	"syscall"
)

// listenWorkers needs SO_REUSEPORT's load spreading, which only Linux has.
func listenWorkers(addr string, n int) ([]*os.File, string, error) {
	return nil, "", errors.New("--workers above 1 needs Linux (SO_REUSEPORT)")
}

func workerSysProcAttr() *syscall.SysProcAttr { return nil }
