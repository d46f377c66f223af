package client

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestXDSSecurity_FromEnvAndDefaults(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("tok-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := defaultTokenFile
	t.Cleanup(func() { defaultTokenFile = old })
	for _, v := range []string{EnvXDSCAFile, EnvXDSCertFile, EnvXDSKeyFile, EnvXDSTokenWithoutTLS} {
		t.Setenv(v, "")
	}
	t.Setenv(EnvXDSTokenFile, "") // restored after the test
	os.Unsetenv(EnvXDSTokenFile)

	defaultTokenFile = filepath.Join(dir, "absent")
	if s := (xdsSecurity{}).fromEnv(); *s.tokenFile != "" {
		t.Errorf("no token file present: token file %q, want none", *s.tokenFile)
	}
	defaultTokenFile = tokenFile
	s := (xdsSecurity{}).fromEnv()
	if *s.tokenFile != tokenFile {
		t.Errorf("token file %q, want the default %q", *s.tokenFile, tokenFile)
	}
	// A token over plaintext needs an explicit permission.
	if _, _, err := s.dialOptions(nil, nil); err == nil || !strings.Contains(err.Error(), EnvXDSTokenWithoutTLS) {
		t.Errorf("token without TLS: error %v, want one naming %s", err, EnvXDSTokenWithoutTLS)
	}
	t.Setenv(EnvXDSTokenWithoutTLS, "true")
	if _, stop, err := (xdsSecurity{}).fromEnv().dialOptions(nil, nil); err != nil {
		t.Errorf("token without TLS, allowed: %v", err)
	} else {
		stop()
	}
	// An empty option sends no token even when the default file exists.
	empty := ""
	if s := (xdsSecurity{tokenFile: &empty}).fromEnv(); *s.tokenFile != "" {
		t.Errorf("WithXDSTokenFile(\"\"): token file %q, want none", *s.tokenFile)
	}
	t.Setenv(EnvXDSTokenFile, "/elsewhere")
	if s := (xdsSecurity{}).fromEnv(); *s.tokenFile != "/elsewhere" {
		t.Errorf("token file %q, want %s's", *s.tokenFile, EnvXDSTokenFile)
	}
	if _, _, err := (xdsSecurity{certFile: "c", keyFile: "k"}).dialOptions(nil, nil); err == nil {
		t.Error("a client certificate without a CA was accepted")
	}
}

func TestTokenFile_ReadForEveryStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	tf := &tokenFile{path: path, requireTLS: true}
	if _, err := tf.GetRequestMetadata(context.Background()); err == nil {
		t.Fatal("a missing token file gave metadata")
	}
	for _, tok := range []string{"first", "rotated"} {
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		md, err := tf.GetRequestMetadata(context.Background())
		if err != nil || md["authorization"] != "Bearer "+tok {
			t.Fatalf("metadata %v, %v; want Bearer %s", md, err, tok)
		}
	}
	if !tf.RequireTransportSecurity() {
		t.Error("the token does not require TLS")
	}
}
