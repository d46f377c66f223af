// Package convert is the one conversion from Kubernetes objects (Services and
// discovery.k8s.io/v1 EndpointSlices) to the topology model, used by every
// source: the YAML file source and the Kubernetes informer source.
//
// The conversion is pure: it never mutates its inputs, does no I/O and gives
// the same output for the same input, whatever the order of the slices. What
// is wrong with an input object is returned as a Problem for the source to
// report (log line, metric, Kubernetes Event); the object, or the part of it
// that is wrong, is skipped or given its default, and everything else is
// served.
//
// The conversion rules:
//
//   - One topology.Service per TCP Service port (UDP and SCTP ports are
//     skipped), keyed by the Service port number. A Service port with no
//     matching endpoints is still a service, with no endpoints.
//   - ExternalName Services give nothing; headless Services are converted
//     like any other.
//   - A Service port matches the EndpointSlice port with the same name (""
//     for the port of an unnamed single-port Service); the endpoint port is
//     the slice port's number. A slice port that matches no Service port is
//     reported once (UnmatchedPort).
//   - IPv4 and IPv6 slices are converted; FQDN slices are skipped
//     (UnsupportedAddressType). Only an endpoint's first address is used, as
//     the EndpointSlice API allows.
//   - Conditions follow the EndpointSlice API: ready nil means ready, serving
//     nil means the same as ready, terminating nil means false.
//   - The same address and port in several slices (or twice in one) is kept
//     once, preferring ready, then serving, then not terminating, then the
//     slice whose name sorts first; differing conditions are reported
//     (ConflictingEndpoint).
//   - Hostname is the targetRef name when it is a Pod, else the endpoint's
//     hostname; Node is the node name; Zone is "" when unknown.
//   - Weight: fairway.io/endpoint-weights on the slice, else the pod's
//     fairway.io/weight annotation (with Options.Pod), else the slice's
//     fairway.io/weight, else 1.
//   - Labels: the slice's label.fairway.io/KEY labels (as KEY), over the pod's
//     own labels (with Options.Pod).
//   - Export (who sees the Service, export.go): the Service's
//     fairway.io/export-to annotation, else Options.DefaultExport.
//   - Validation (validate.go), the same for every source: names, ports,
//     endpoint fields and labels are what the Kubernetes API server accepts,
//     and every string that reaches an xDS resource is valid UTF-8. A bad
//     value is reported and the smallest unit holding it (Service, port,
//     endpoint, label) is skipped; a converted topology.Service always
//     passes topology.Service.Validate.
package convert

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

// Problem reasons. They are CamelCase so that the Kubernetes source can use
// them as Event reasons.
const (
	ReasonInvalidAnnotation      = "InvalidAnnotation"
	ReasonUnmatchedPort          = "UnmatchedPort"
	ReasonMissingPort            = "MissingPort"
	ReasonUnsupportedAddressType = "UnsupportedAddressType"
	ReasonInvalidAddress         = "InvalidAddress"
	ReasonConflictingEndpoint    = "ConflictingEndpoint"
	ReasonOrphanEndpointSlice    = "OrphanEndpointSlice"
	ReasonMissingServiceLabel    = "MissingServiceLabel"
	ReasonForeignEndpointSlice   = "ForeignEndpointSlice"
	ReasonDuplicateObject        = "DuplicateObject"
)

// Problem is something wrong with an input object, reported (log, metric,
// Kubernetes Event on the Service) and skipped.
type Problem struct {
	Namespace, Service string // the Service it concerns ("" Service when unknown, e.g. orphan slice)
	Object             string // "EndpointSlice ns/name" or "Service ns/name"
	Reason             string // short CamelCase, usable as an Event reason (the Reason constants)
	Message            string // human sentence saying what was wrong and what was done
}

func (p Problem) String() string {
	return p.Reason + ": " + p.Object + ": " + p.Message
}

// Options tune a conversion. The zero value is ready to use.
type Options struct {
	// Pod, when set, returns a pod's labels and annotations (pod watching);
	// its labels are added to the endpoint's and its fairway.io/weight
	// annotation sets the endpoint's weight. It is called synchronously and
	// must not block; the maps it returns are only read.
	Pod func(namespace, name string) (labels map[string]string, annotations map[string]string, ok bool)
	// DefaultExport is the export of a Service without a valid
	// fairway.io/export-to annotation (default topology.ExportAll: every
	// namespace sees it; topology.ExportOwn: its own namespace only).
	DefaultExport topology.Export
}

// ServiceNameOf returns the Service an EndpointSlice belongs to (label
// kubernetes.io/service-name).
func ServiceNameOf(slice *discoveryv1.EndpointSlice) (string, bool) {
	name, ok := slice.Labels[discoveryv1.LabelServiceName]
	return name, ok && name != ""
}

// Service converts one Service and the EndpointSlices that belong to it
// into one topology.Service per Service port (sorted by port), plus the
// problems found. Slices of another Service are reported
// (ForeignEndpointSlice) and skipped. Never mutates its inputs.
func Service(svc *corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, opts Options) ([]*topology.Service, []Problem) {
	if svc == nil || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, nil
	}
	if p, bad := nameProblem(svc); bad {
		return nil, []Problem{p}
	}
	c := converter{svc: svc, opts: opts}
	return c.convert(endpointSlices)
}

// All converts a whole set of objects, as the file source reads them: it
// groups the slices by Service; slices without the service label
// (MissingServiceLabel) and slices whose Service is absent
// (OrphanEndpointSlice) are reported and skipped, as are second copies of a
// Service or slice with the same namespace and name (DuplicateObject; the
// first is kept). Services are returned sorted by namespace, name and port.
func All(services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, opts Options) ([]*topology.Service, []Problem) {
	type nsName struct{ ns, name string }
	var problems []Problem
	svcs := make(map[nsName]*corev1.Service, len(services))
	var order []nsName
	for _, svc := range services {
		k := nsName{svc.Namespace, svc.Name}
		if _, dup := svcs[k]; dup {
			problems = append(problems, Problem{
				Namespace: svc.Namespace, Service: svc.Name, Object: serviceObject(svc), Reason: ReasonDuplicateObject,
				Message: "the Service appears twice; using the first",
			})
			continue
		}
		svcs[k] = svc
		order = append(order, k)
	}
	slices.SortFunc(order, func(a, b nsName) int { return cmp.Or(strings.Compare(a.ns, b.ns), strings.Compare(a.name, b.name)) })

	bySvc := make(map[nsName][]*discoveryv1.EndpointSlice)
	seen := make(map[nsName]bool, len(endpointSlices))
	for _, sl := range endpointSlices {
		if seen[nsName{sl.Namespace, sl.Name}] {
			name, _ := ServiceNameOf(sl)
			problems = append(problems, Problem{
				Namespace: sl.Namespace, Service: name, Object: sliceObject(sl), Reason: ReasonDuplicateObject,
				Message: "the EndpointSlice appears twice; using the first",
			})
			continue
		}
		seen[nsName{sl.Namespace, sl.Name}] = true
		name, ok := ServiceNameOf(sl)
		if !ok {
			problems = append(problems, Problem{
				Namespace: sl.Namespace, Object: sliceObject(sl), Reason: ReasonMissingServiceLabel,
				Message: fmt.Sprintf("the EndpointSlice has no %s label; skipping it", discoveryv1.LabelServiceName),
			})
			continue
		}
		k := nsName{sl.Namespace, name}
		if _, ok := svcs[k]; !ok {
			problems = append(problems, Problem{
				Namespace: sl.Namespace, Object: sliceObject(sl), Reason: ReasonOrphanEndpointSlice,
				Message: fmt.Sprintf("the EndpointSlice belongs to Service %s/%s, which does not exist; skipping it", sl.Namespace, name),
			})
			continue
		}
		bySvc[k] = append(bySvc[k], sl)
	}

	var out []*topology.Service
	for _, k := range order {
		s, p := Service(svcs[k], bySvc[k], opts)
		out = append(out, s...)
		problems = append(problems, p...)
	}
	return out, problems
}

func serviceObject(svc *corev1.Service) string {
	return "Service " + svc.Namespace + "/" + svc.Name
}

func sliceObject(sl *discoveryv1.EndpointSlice) string {
	return "EndpointSlice " + sl.Namespace + "/" + sl.Name
}

// converter converts one Service.
type converter struct {
	svc      *corev1.Service
	opts     Options
	problems []Problem
}

func (c *converter) report(object, reason, format string, args ...any) {
	c.problems = append(c.problems, Problem{
		Namespace: c.svc.Namespace, Service: c.svc.Name, Object: object, Reason: reason,
		Message: fmt.Sprintf(format, args...),
	})
}

// candidate is an endpoint with where it came from, for deduplication.
type candidate struct {
	ep    topology.Endpoint
	slice string
}

func (c *converter) convert(sls []*discoveryv1.EndpointSlice) ([]*topology.Service, []Problem) {
	pol, pp := Policy(c.svc.Annotations)
	for _, p := range pp {
		p.Namespace, p.Service, p.Object = c.svc.Namespace, c.svc.Name, serviceObject(c.svc)
		c.problems = append(c.problems, p)
	}
	export := c.export()

	// Service port name → port number, TCP ports only.
	portByName := make(map[string]int32, len(c.svc.Spec.Ports))
	var ports []int32
	for _, sp := range c.svc.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			continue
		}
		if why := portProblem(sp.Port); why != "" {
			c.report(serviceObject(c.svc), ReasonInvalidPort, "port %q: %s; skipping it", sp.Name, why)
			continue
		}
		portByName[sp.Name] = sp.Port
		ports = append(ports, sp.Port)
	}
	slices.Sort(ports)
	ports = slices.Compact(ports)

	sls = slices.Clone(sls)
	slices.SortFunc(sls, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	byPort := make(map[int32]map[string]candidate, len(ports))
	for _, sl := range sls {
		c.slice(sl, portByName, byPort)
	}

	out := make([]*topology.Service, 0, len(ports))
	for i, port := range ports {
		p := pol
		if i > 0 { // each Service owns its Policy pointers
			p = clonePolicy(pol)
		}
		eps := make([]topology.Endpoint, 0, len(byPort[port]))
		for _, cand := range byPort[port] {
			eps = append(eps, cand.ep)
		}
		topology.SortEndpoints(eps)
		out = append(out, &topology.Service{
			Key:       topology.ServiceKey{Namespace: c.svc.Namespace, Name: c.svc.Name, Port: port},
			Policy:    p,
			Export:    cloneExport(export, i),
			Endpoints: eps,
		})
	}
	return out, c.problems
}

// cloneExport returns e for port i: each Service after the first owns its
// Namespaces slice.
func cloneExport(e topology.Export, i int) topology.Export {
	if i > 0 {
		e.Namespaces = slices.Clone(e.Namespaces)
	}
	return e
}

func clonePolicy(p topology.Policy) topology.Policy {
	if p.SlowStart != nil {
		s := *p.SlowStart
		p.SlowStart = &s
	}
	if p.Outlier != nil {
		o := *p.Outlier
		p.Outlier = &o
	}
	if p.WRR != nil {
		w := *p.WRR
		p.WRR = &w
	}
	return p
}

// slice adds the endpoints of one slice to byPort (Service port → endpoint
// key → candidate): it checks the slice, maps its ports to the Service's,
// reads what the slice gives all its endpoints, then converts each endpoint
// once per mapped port.
func (c *converter) slice(sl *discoveryv1.EndpointSlice, portByName map[string]int32, byPort map[int32]map[string]candidate) {
	obj := sliceObject(sl)
	if !c.usable(obj, sl) {
		return
	}
	pms := c.portMaps(obj, sl, portByName)
	if len(pms) == 0 {
		return
	}
	d := c.sliceDefaults(obj, sl)
	for i, e := range sl.Endpoints {
		ep, ok := c.endpoint(obj, sl, i, e, d)
		if !ok {
			continue
		}
		for _, pm := range pms {
			ep := ep
			ep.Port = pm.epPort
			c.add(obj, sl.Name, pm.svcPort, ep, byPort)
		}
	}
}

// usable reports whether sl belongs to the Service and has a supported
// address type, reporting it when not.
func (c *converter) usable(obj string, sl *discoveryv1.EndpointSlice) bool {
	if name, ok := ServiceNameOf(sl); !ok || name != c.svc.Name || sl.Namespace != c.svc.Namespace {
		c.report(obj, ReasonForeignEndpointSlice, "the EndpointSlice does not belong to Service %s/%s; skipping it", c.svc.Namespace, c.svc.Name)
		return false
	}
	switch sl.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		return true
	}
	c.report(obj, ReasonUnsupportedAddressType, "address type %q is not supported (only IPv4 and IPv6); skipping the EndpointSlice", sl.AddressType)
	return false
}

// portMap maps a slice port to a Service port.
type portMap struct{ svcPort, epPort int32 }

// portMaps maps the TCP ports of sl to the Service ports of the same name,
// reporting those that match none or have no number.
func (c *converter) portMaps(obj string, sl *discoveryv1.EndpointSlice, portByName map[string]int32) []portMap {
	var pms []portMap
	for _, p := range sl.Ports {
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		svcPort, ok := portByName[name]
		if !ok {
			c.report(obj, ReasonUnmatchedPort, "port %q matches no TCP port of the Service; ignoring it", name)
			continue
		}
		if p.Port == nil {
			c.report(obj, ReasonMissingPort, "port %q has no port number; ignoring it", name)
			continue
		}
		if why := portProblem(*p.Port); why != "" {
			c.report(obj, ReasonInvalidPort, "port %q: %s; ignoring it", name, why)
			continue
		}
		pms = append(pms, portMap{svcPort, *p.Port})
	}
	return pms
}

// sliceDefaults is what a slice gives each of its endpoints.
type sliceDefaults struct {
	weight    uint32            // the slice's fairway.io/weight, else 1
	epWeights map[string]uint32 // fairway.io/endpoint-weights, by target name, hostname or address
	labels    map[string]string // the slice's label.fairway.io/KEY labels, as KEY; nil when none
}

func (c *converter) sliceDefaults(obj string, sl *discoveryv1.EndpointSlice) sliceDefaults {
	d := sliceDefaults{weight: 1}
	if w, ok := c.weightAnnotation(obj, sl.Annotations, "default 1"); ok {
		d.weight = w
	}
	d.epWeights = c.endpointWeights(obj, sl.Annotations[AnnotationEndpointWeights])
	prefixed := make(map[string]string)
	for k, v := range sl.Labels {
		if key, ok := strings.CutPrefix(k, LabelPrefix); ok && key != "" {
			prefixed[k] = v
		}
	}
	for k, v := range c.validLabels(obj, prefixed) {
		if d.labels == nil {
			d.labels = make(map[string]string)
		}
		d.labels[strings.TrimPrefix(k, LabelPrefix)] = v
	}
	return d
}

// endpoint converts endpoint i of sl, e, without its port, or reports why
// it is skipped.
func (c *converter) endpoint(obj string, sl *discoveryv1.EndpointSlice, i int, e discoveryv1.Endpoint, d sliceDefaults) (topology.Endpoint, bool) {
	if len(e.Addresses) == 0 {
		c.report(obj, ReasonInvalidAddress, "endpoint %d has no address; skipping it", i)
		return topology.Endpoint{}, false
	}
	addr, err := netip.ParseAddr(e.Addresses[0])
	if err != nil || addr.Zone() != "" || addr.Is4() != (sl.AddressType == discoveryv1.AddressTypeIPv4) {
		c.report(obj, ReasonInvalidAddress, "endpoint address %q is not an %s address; skipping it", e.Addresses[0], sl.AddressType)
		return topology.Endpoint{}, false
	}
	isPod := e.TargetRef != nil && e.TargetRef.Kind == "Pod" && e.TargetRef.Name != ""
	if why := endpointProblem(e, isPod); why != "" {
		c.report(obj, ReasonInvalidEndpoint, "endpoint %s: %s; skipping it", addr, why)
		return topology.Endpoint{}, false
	}
	ep := topology.Endpoint{Address: addr.String(), Weight: d.weight, Labels: d.labels}
	if e.Zone != nil {
		ep.Zone = *e.Zone
	}
	if e.NodeName != nil {
		ep.Node = *e.NodeName
	}
	switch {
	case isPod:
		ep.Hostname = e.TargetRef.Name
	case e.Hostname != nil:
		ep.Hostname = *e.Hostname
	}
	ep.Ready = e.Conditions.Ready == nil || *e.Conditions.Ready
	ep.Serving = ep.Ready
	if e.Conditions.Serving != nil {
		ep.Serving = *e.Conditions.Serving
	}
	ep.Terminating = e.Conditions.Terminating != nil && *e.Conditions.Terminating
	if isPod && c.opts.Pod != nil {
		c.applyPod(&ep, cmp.Or(e.TargetRef.Namespace, sl.Namespace), e.TargetRef.Name, d)
	}
	for _, key := range []string{targetName(e), ep.Hostname, ep.Address, e.Addresses[0]} {
		if w, ok := d.epWeights[key]; ok && key != "" {
			ep.Weight = w
			break
		}
	}
	return ep, true
}

// applyPod adds the labels of pod ns/name to ep's (the slice's win) and
// gives ep the pod's fairway.io/weight, when Options.Pod knows the pod.
func (c *converter) applyPod(ep *topology.Endpoint, ns, name string, d sliceDefaults) {
	podLabels, podAnn, ok := c.opts.Pod(ns, name)
	if !ok {
		return
	}
	podLabels = c.validLabels("Pod "+ns+"/"+name, podLabels)
	if len(podLabels) > 0 {
		merged := maps.Clone(podLabels)
		maps.Copy(merged, d.labels)
		ep.Labels = merged
	}
	if w, ok := c.weightAnnotation("Pod "+ns+"/"+name, podAnn, fmt.Sprintf("the slice weight %d", d.weight)); ok {
		ep.Weight = w
	}
}

// weightAnnotation parses the fairway.io/weight annotation in ann. An
// invalid value is reported on obj, saying that instead is used.
func (c *converter) weightAnnotation(obj string, ann map[string]string, instead string) (uint32, bool) {
	v := strings.TrimSpace(ann[AnnotationWeight])
	if v == "" {
		return 0, false
	}
	w, err := ParseWeight(v)
	if err != nil {
		c.report(obj, ReasonInvalidAnnotation, "annotation %s: invalid value %q (%v); using %s", AnnotationWeight, v, err, instead)
		return 0, false
	}
	return w, true
}

func targetName(e discoveryv1.Endpoint) string {
	if e.TargetRef == nil {
		return ""
	}
	return e.TargetRef.Name
}

// add adds ep to the Service port's endpoints, keeping the better of two
// endpoints with the same key.
func (c *converter) add(obj, slice string, svcPort int32, ep topology.Endpoint, byPort map[int32]map[string]candidate) {
	m := byPort[svcPort]
	if m == nil {
		m = make(map[string]candidate)
		byPort[svcPort] = m
	}
	key := ep.Key()
	old, dup := m[key]
	if !dup {
		m[key] = candidate{ep, slice}
		return
	}
	if old.ep.Ready != ep.Ready || old.ep.Serving != ep.Serving || old.ep.Terminating != ep.Terminating {
		keep := old
		if rank(ep) > rank(old.ep) {
			keep = candidate{ep, slice}
			m[key] = keep
		}
		c.report(obj, ReasonConflictingEndpoint,
			"endpoint %s also appears in EndpointSlice %s with other conditions (%s here, %s there); using the %s one from EndpointSlice %s",
			key, old.slice, conditions(ep), conditions(old.ep), conditions(keep.ep), keep.slice)
	}
}

// rank orders endpoint copies: ready first, then serving, then not
// terminating.
func rank(e topology.Endpoint) int {
	r := 0
	if e.Ready {
		r += 4
	}
	if e.Serving {
		r += 2
	}
	if !e.Terminating {
		r++
	}
	return r
}

func conditions(e topology.Endpoint) string {
	return fmt.Sprintf("ready=%t serving=%t terminating=%t", e.Ready, e.Serving, e.Terminating)
}

// endpointWeights parses "KEY=N,KEY=N"; bad entries are reported and
// ignored.
func (c *converter) endpointWeights(obj, v string) map[string]uint32 {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil
	}
	m := make(map[string]uint32)
	for _, entry := range strings.Split(v, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		key, val, ok := strings.Cut(entry, "=")
		key = strings.TrimSpace(key)
		var w uint32
		var err error
		if !ok || key == "" {
			err = fmt.Errorf("want KEY=N")
		} else {
			w, err = ParseWeight(val)
		}
		if err != nil {
			c.report(obj, ReasonInvalidAnnotation,
				"annotation %s: invalid entry %q (%v); ignoring it, the endpoint keeps its default weight", AnnotationEndpointWeights, entry, err)
			continue
		}
		m[key] = w
	}
	return m
}
