// Package cli holds what the example servers' command lines share: the
// checks of the flags they all have (CheckCommon).
package cli
