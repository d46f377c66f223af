package topology

import (
	"fmt"
	"net/netip"
	"unicode/utf8"

	"github.com/fairway-lb/fairway/wire"
)

// Validate checks what the xDS resources of s need to be sent and read: its
// key reads back from both of its resource names (wire.ParseResourceName: a
// name and a namespace without "." or ":", a port in 1-65535), every string
// it carries is valid UTF-8 (as a protobuf string must be), its hash header
// is one (wire.ValidateHashHeader), and every
// endpoint has an IP address literal and a port in 1-65535.
//
// Sources check the stricter Kubernetes rules first (package convert); the
// xDS server checks Validate before rendering a service, as its last line of
// defence.
func (s *Service) Validate() error {
	if err := validateKey(s.Key); err != nil {
		return err
	}
	if !utf8.ValidString(s.Policy.Strategy) || !utf8.ValidString(string(s.Policy.LB)) {
		return fmt.Errorf("fairway/topology: service %s: policy: strategy or lb policy is not valid UTF-8", s.Key)
	}
	if err := wire.ValidateHashHeader(s.Policy.HashHeader); err != nil {
		return fmt.Errorf("fairway/topology: service %s: policy: %w", s.Key, err)
	}
	for i := range s.Endpoints {
		if err := s.Endpoints[i].validate(); err != nil {
			return fmt.Errorf("fairway/topology: service %s: endpoint %d: %w", s.Key, i, err)
		}
	}
	return nil
}

func validateKey(k ServiceKey) error {
	if !utf8.ValidString(k.Name) || !utf8.ValidString(k.Namespace) {
		return fmt.Errorf("fairway/topology: service %q: name or namespace is not valid UTF-8", k.ResourceName())
	}
	for _, name := range []string{k.ResourceName(), k.FQDNResourceName()} {
		got, err := wire.ParseResourceName(name)
		if err != nil {
			return fmt.Errorf("fairway/topology: service %q: %w", k.ResourceName(), err)
		}
		if got != k {
			return fmt.Errorf("fairway/topology: service %q: resource name %q reads back as %q", k.ResourceName(), name, got.ResourceName())
		}
	}
	return nil
}

func (e *Endpoint) validate() error {
	addr, err := netip.ParseAddr(e.Address)
	if err != nil || addr.Zone() != "" {
		return fmt.Errorf("address %q is not an IP address literal", e.Address)
	}
	if e.Port < 1 || e.Port > 65535 {
		return fmt.Errorf("port %d is not in 1-65535", e.Port)
	}
	switch {
	case !utf8.ValidString(e.Zone):
		return fmt.Errorf("zone %q is not valid UTF-8", e.Zone)
	case !utf8.ValidString(e.Node):
		return fmt.Errorf("node %q is not valid UTF-8", e.Node)
	case !utf8.ValidString(e.Hostname):
		return fmt.Errorf("hostname %q is not valid UTF-8", e.Hostname)
	}
	for k, v := range e.Labels {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("label %q=%q is not valid UTF-8", k, v)
		}
	}
	return nil
}
