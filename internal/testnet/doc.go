// Package testnet gives tests loopback addresses with a fixed behaviour.
// For tests only (internal, standard library only).
package testnet
