package main

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// clustersSeenBy returns the Cluster names a client of namespace ns sees,
// from the control plane's /debug/config_dump.
func (cp *controlPlane) clustersSeenBy(ns string) []string {
	cp.t.Helper()
	resp, err := http.Get("http://" + cp.adminAddr + "/debug/config_dump?type=cluster&namespace=" + ns)
	if err != nil {
		cp.t.Fatal(err)
	}
	defer resp.Body.Close()
	var dump xdsserver.ConfigDump
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		cp.t.Fatal(err)
	}
	var names []string
	for _, td := range dump.Types {
		for _, r := range td.Resources {
			names = append(names, r.Name)
		}
	}
	return names
}

// --default-export-to=. keeps an unannotated Service in its namespace; its
// fairway.io/export-to annotation exports it further.
func TestControlPlane_DefaultExportToReachesTheServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "world.yaml")
	writeFile(t, path, world(8080, "", "127.0.0.21")...)
	cp := startControlPlane(t, path, testkit.FreeAddr(t), "--default-export-to=.")
	if got := cp.clustersSeenBy("default"); len(got) != 1 || got[0] != "echo.default:8080" {
		t.Errorf("namespace default sees %v, want echo", got)
	}
	if got := cp.clustersSeenBy("shop"); len(got) != 0 {
		t.Errorf("namespace shop sees %v of an unannotated Service with --default-export-to=., want nothing", got)
	}
	writeFile(t, path, world(8080, `"fairway.io/export-to": "shop"`, "127.0.0.21")...)
	testkit.Eventually(ctx, t, "echo exported to shop", func() bool { return len(cp.clustersSeenBy("shop")) == 1 })
	if got := cp.clustersSeenBy("billing"); len(got) != 0 {
		t.Errorf("namespace billing sees %v, want nothing", got)
	}
}
