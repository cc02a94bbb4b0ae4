//go:build !linux

package main

import (
	"errors"
	"net"
	"os"
	"syscall"

	"github.com/servalproxy/serval"
)

var errWorkersLinux = errors.New("--workers above 1 needs Linux (a shared listening socket balanced through a memfd)")

// listenShared: worker processes need Linux.
func listenShared(addr string) (*os.File, string, error) { return nil, "", errWorkersLinux }

func workerSysProcAttr() *syscall.SysProcAttr { return nil }

// loadTable: worker processes need Linux (balance_linux.go).
type loadTable struct{}

func newLoadTable(int) (*loadTable, *os.File, error) { return nil, nil, errWorkersLinux }
func workerLoadTable() (*loadTable, error)           { return nil, errWorkersLinux }
func closeWorkerLoadTable()                          {}
func (*loadTable) leave(int)                         {}
func (*loadTable) close()                            {}

func balanceWorker(ln net.Listener, m serval.Metrics, _ *loadTable, _ int) (net.Listener, serval.Metrics, error) {
	return nil, nil, errWorkersLinux
}
