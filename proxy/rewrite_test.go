package proxy

import "testing"

func TestUnderscoreAlias(t *testing.T) {
	for name, want := range map[string]bool{
		"X_Forwarded_For": true, "x-forwarded_for": true, "Transfer_Encoding": true, "CONTENT_LENGTH": true,
		"X_Real_IP": true, "Proxy_Authorization": true,
		"X-Forwarded-For": false, "X_Custom": false, "Content-Length": false, "X_Forwarded_Fo": false, "": false,
	} {
		if got := underscoreAlias([]byte(name)); got != want {
			t.Errorf("underscoreAlias(%q) = %v, want %v", name, got, want)
		}
	}
}
