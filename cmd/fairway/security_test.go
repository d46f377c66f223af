package main

import (
	"io"
	"strings"
	"testing"
)

func TestControlPlaneFlags_Security(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	for _, tc := range []struct {
		args     []string
		wantMode string // "" with wantErr
		wantErr  string
	}{
		{[]string{"--file", "w.yaml"}, "", "needs a cluster"}, // none is never implied
		{[]string{"--file", "w.yaml", "--auth", "none"}, "none", ""},
		{[]string{"--kubeconfig", "k"}, "token", ""},
		{[]string{"--file", "w.yaml", "--auth", "token"}, "", "needs a cluster"},
		{[]string{"--file", "w.yaml", "--auth", "token", "--kubeconfig", "k"}, "token", ""},
		{[]string{"--kubeconfig", "k", "--auth", "basic"}, "", "--auth must be"},
		{[]string{"--kubeconfig", "k", "--auth", "mtls"}, "", "needs --client-ca-file"},
		{[]string{"--kubeconfig", "k", "--auth", "token,mtls", "--client-ca-file", "ca", "--tls-cert-file", "c", "--tls-key-file", "k"}, "token,mtls", ""},
		{[]string{"--kubeconfig", "k", "--client-ca-file", "ca"}, "", "needs --auth mtls"},
		{[]string{"--kubeconfig", "k", "--trust-domain", "cluster.local"}, "", "needs --auth mtls"},
		{[]string{"--kubeconfig", "k", "--tls-cert-file", "c"}, "", "go together"},
		{[]string{"--kubeconfig", "k", "--token-cache-ttl", "0s"}, "", "must be positive"},
	} {
		f, err := parseControlPlaneFlags(tc.args, io.Discard, io.Discard)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.wantErr == "" && f.security.mode.String() != tc.wantMode:
			t.Errorf("%q: mode %s, want %s", tc.args, f.security.mode, tc.wantMode)
		}
	}
}

func TestControlPlane_AuthNoneWarnsAtStart(t *testing.T) {
	log := newLog(t)
	f, err := parseControlPlaneFlags([]string{"--file", "w.yaml", "--auth", "none"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	l, err := newLogger(log, "info", "text")
	if err != nil {
		t.Fatal(err)
	}
	_, stop, err := xdsSecurity(f, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if s := log.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "--auth none") {
		t.Errorf("log = %q, want a Warn naming --auth none", s)
	}
}
