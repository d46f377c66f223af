package convert

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Validation: what reaches a topology.Service, and from there an xDS
// resource, is what the Kubernetes API server accepts (v1.37), and every
// string is valid UTF-8, whichever source the object came from. The rules,
// each applied to the smallest unit that holds the bad value:
//
//   - The Service name and namespace are RFC 1123 labels, as the API server
//     validates them (namespace: NameIsDNSLabel; Service name: NameIsDNSLabel
//     since KEP-5311, GA in 1.37, a superset of the older RFC 1035 rule).
//     They hold no "." or ":", so resource names NAME.NAMESPACE:PORT cannot
//     collide. Otherwise the Service is skipped (InvalidName).
//   - Service ports and EndpointSlice ports are in 1-65535; otherwise the
//     port is skipped (InvalidPort).
//   - An endpoint's hostname is an RFC 1123 label and its node name a DNS
//     subdomain (as the API server checks), its Pod target's name a DNS
//     subdomain (what a Pod name is) and its zone valid UTF-8 (the API
//     server does not check zones); otherwise the endpoint is skipped
//     (InvalidEndpoint).
//   - Labels copied to endpoints (label.fairway.io/KEY, and pod labels) are
//     a qualified name and a label value; otherwise the label is skipped
//     (InvalidLabel).
//   - A fairway.io/ annotation value that is not valid UTF-8 counts as
//     invalid (InvalidAnnotation) and its default is used.

// More Problem reasons, for values the Kubernetes API server would reject.
const (
	ReasonInvalidName     = "InvalidName"
	ReasonInvalidPort     = "InvalidPort"
	ReasonInvalidEndpoint = "InvalidEndpoint"
	ReasonInvalidLabel    = "InvalidLabel"
)

// nameProblem returns the InvalidName problem of svc, if its name or
// namespace is not what the API server accepts.
func nameProblem(svc *corev1.Service) (Problem, bool) {
	var why []string
	for _, f := range []struct{ what, v string }{{"namespace", svc.Namespace}, {"name", svc.Name}} {
		if msgs := validation.IsDNS1123Label(f.v); len(msgs) > 0 {
			why = append(why, fmt.Sprintf("%s %q: %s", f.what, f.v, strings.Join(msgs, "; ")))
		}
	}
	if len(why) == 0 {
		return Problem{}, false
	}
	return Problem{
		Namespace: svc.Namespace, Service: svc.Name, Object: serviceObject(svc), Reason: ReasonInvalidName,
		Message: fmt.Sprintf("%s; skipping the Service", strings.Join(why, ", ")),
	}, true
}

// portProblem says why port is not a valid port number; "" if it is.
func portProblem(port int32) string {
	if msgs := validation.IsValidPortNum(int(port)); len(msgs) > 0 {
		return fmt.Sprintf("%d: %s", port, strings.Join(msgs, "; "))
	}
	return ""
}

// endpointProblem says why endpoint e (of a Pod when isPod) is one the API
// server would reject or cannot be served; "" if none.
func endpointProblem(e discoveryv1.Endpoint, isPod bool) string {
	check := func(what, v string, f func(string) []string) string {
		if msgs := f(v); len(msgs) > 0 {
			return fmt.Sprintf("%s %q: %s", what, v, strings.Join(msgs, "; "))
		}
		return ""
	}
	var why string
	if e.Hostname != nil {
		why = check("hostname", *e.Hostname, validation.IsDNS1123Label)
	}
	if why == "" && e.NodeName != nil {
		why = check("node name", *e.NodeName, validation.IsDNS1123Subdomain)
	}
	if why == "" && isPod {
		why = check("pod name", e.TargetRef.Name, validation.IsDNS1123Subdomain)
	}
	if why == "" && e.Zone != nil && !utf8.ValidString(*e.Zone) {
		why = fmt.Sprintf("zone %q is not valid UTF-8", *e.Zone)
	}
	return why
}

// validLabels returns labels without the entries that are not a qualified
// name and a label value, reporting each on obj; labels itself when all are
// valid.
func (c *converter) validLabels(obj string, labels map[string]string) map[string]string {
	var bad []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		msgs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(labels[k])...)
		if len(msgs) > 0 {
			c.report(obj, ReasonInvalidLabel, "label %q=%q: %s; ignoring it", k, labels[k], strings.Join(msgs, "; "))
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return labels
	}
	labels = maps.Clone(labels)
	for _, k := range bad {
		delete(labels, k)
	}
	return labels
}
