package convert

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

// AnnotationExportTo names the namespaces whose xDS clients see a Service
// (see docs/annotations.md): a comma-separated list of namespaces, "*" for
// every namespace, "." for the Service's own. A Service is always visible in
// its own namespace.
const AnnotationExportTo = "fairway.io/export-to"

// ParseExportTo parses a fairway.io/export-to value: comma-separated
// entries, each "*" (every namespace), "." (the Service's own namespace) or
// a namespace name (an RFC 1123 label). "*" anywhere exports to every
// namespace. An empty value, or one with an invalid entry, is an error.
func ParseExportTo(v string) (topology.Export, error) {
	var e topology.Export
	all := false
	empty := true
	for _, entry := range strings.Split(v, ",") {
		entry = strings.TrimSpace(entry)
		switch {
		case entry == "":
			continue
		case entry == "*":
			all = true
		case entry == ".":
		default:
			if msgs := validation.IsDNS1123Label(entry); len(msgs) > 0 {
				return topology.Export{}, fmt.Errorf("fairway/convert: %q is not a namespace: %s", entry, strings.Join(msgs, "; "))
			}
			e.Namespaces = append(e.Namespaces, entry)
		}
		empty = false
	}
	if empty {
		return topology.Export{}, errors.New("fairway/convert: no namespace given")
	}
	if all {
		return topology.ExportAll(), nil
	}
	e.Limited = true
	slices.Sort(e.Namespaces)
	e.Namespaces = slices.Compact(e.Namespaces)
	return e, nil
}

// ParseDefaultExportTo parses the cluster-wide export of Services without
// the annotation: "*" (every namespace) or "." (their own namespace only).
func ParseDefaultExportTo(v string) (topology.Export, error) {
	switch strings.TrimSpace(v) {
	case "*":
		return topology.ExportAll(), nil
	case ".":
		return topology.ExportOwn(), nil
	}
	return topology.Export{}, fmt.Errorf("fairway/convert: default export %q: want \"*\" (every namespace) or \".\" (the Service's own)", v)
}

// export returns the Service's export: its fairway.io/export-to annotation,
// else (absent, empty, or invalid: reported) Options.DefaultExport. Its own
// namespace, named in the list, is dropped (it always sees the Service).
func (c *converter) export() topology.Export {
	def := c.opts.DefaultExport
	var p parser
	defer func() {
		for _, pr := range p.problems {
			c.report(serviceObject(c.svc), pr.Reason, "%s", pr.Message)
		}
	}()
	v, ok := p.get(c.svc.Annotations, AnnotationExportTo)
	if !ok {
		return def
	}
	e, err := ParseExportTo(v)
	if err != nil {
		p.invalid(AnnotationExportTo, v, err.Error(), def.String())
		return def
	}
	e.Namespaces = slices.DeleteFunc(e.Namespaces, func(ns string) bool { return ns == c.svc.Namespace })
	if len(e.Namespaces) == 0 {
		e.Namespaces = nil
	}
	return e
}
