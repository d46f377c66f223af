package topology

import (
	"strings"
	"testing"
)

func TestServiceValidate(t *testing.T) {
	good := func() *Service {
		return &Service{
			Key:       ServiceKey{Namespace: "default", Name: "echo", Port: 80},
			Policy:    DefaultPolicy(),
			Endpoints: []Endpoint{{Address: "10.0.0.1", Port: 8080, Zone: "zone-a", Hostname: "echo-1", Labels: map[string]string{"shard": "1"}}},
		}
	}
	for _, tc := range []struct {
		name    string
		edit    func(s *Service)
		wantErr string // "" for valid
	}{
		{name: "valid", edit: func(*Service) {}},
		{name: "IPv6", edit: func(s *Service) { s.Endpoints[0].Address = "fd00::1" }},
		{name: "dotted name", edit: func(s *Service) { s.Key.Name = "a.b" }, wantErr: "is not NAME.NAMESPACE:PORT"},
		{name: "empty namespace", edit: func(s *Service) { s.Key.Namespace = "" }, wantErr: "is not NAME.NAMESPACE:PORT"},
		{name: "colon in name", edit: func(s *Service) { s.Key.Name = "a:b" }, wantErr: "port"},
		{name: "port 0", edit: func(s *Service) { s.Key.Port = 0 }, wantErr: "not a number in 1-65535"},
		{name: "name not UTF-8", edit: func(s *Service) { s.Key.Name = "e\xff" }, wantErr: "not valid UTF-8"},
		{name: "strategy not UTF-8", edit: func(s *Service) { s.Policy.Strategy = "[\xff]" }, wantErr: "not valid UTF-8"},
		{name: "hash header with CR LF", edit: func(s *Service) { s.Policy.HashHeader = "x\r\nevil" }, wantErr: "hash header"},
		{name: "hash header not UTF-8", edit: func(s *Service) { s.Policy.HashHeader = "x\xff" }, wantErr: "hash header"},
		{name: "hostname not UTF-8", edit: func(s *Service) { s.Endpoints[0].Hostname = "\xff" }, wantErr: "hostname"},
		{name: "zone not UTF-8", edit: func(s *Service) { s.Endpoints[0].Zone = "\xff" }, wantErr: "zone"},
		{name: "node not UTF-8", edit: func(s *Service) { s.Endpoints[0].Node = "\xff" }, wantErr: "node"},
		{name: "label not UTF-8", edit: func(s *Service) { s.Endpoints[0].Labels = map[string]string{"k": "\xff"} }, wantErr: "label"},
		{name: "endpoint port -5", edit: func(s *Service) { s.Endpoints[0].Port = -5 }, wantErr: "port -5"},
		{name: "endpoint address", edit: func(s *Service) { s.Endpoints[0].Address = "echo" }, wantErr: "not an IP address literal"},
		{name: "scoped address", edit: func(s *Service) { s.Endpoints[0].Address = "fe80::1%eth0" }, wantErr: "not an IP address literal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.edit(s)
			err := s.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
