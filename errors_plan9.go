//go:build plan9

package serval

// localResourceErrnos: Plan 9 reports errors as strings, not numbers;
// LocalResourceError finds none there.
var localResourceErrnos = [...]error{}
