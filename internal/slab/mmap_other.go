//go:build !linux || race

package slab

const enabled = false

func takeChunk(int) []byte { return nil }

func giveChunk([]byte) {}
