package file

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Objects are the Kubernetes objects of a file, in file order.
type Objects struct {
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	// Skipped counts the objects of other kinds (or versions), which are
	// ignored.
	Skipped []string
}

// Decode reads the Services (v1) and EndpointSlices (discovery.k8s.io/v1) of
// a multi-document YAML (or JSON) file, as `kubectl get -o yaml` prints it:
// "---"-separated documents, each an object or a list (kind List, or any kind
// ending in "List") whose items are objects. Objects of other kinds are
// listed in Skipped. A document that is not valid YAML, has no kind, or does
// not decode into its kind's type is an error naming the document (1-based)
// and, in a list, the item (0-based): the whole file is rejected, since a
// half-written file must never be taken for the world.
func Decode(data []byte) (Objects, error) {
	var objs Objects
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return Objects{}, fmt.Errorf("fairway/file: document %d: %w", doc, err)
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return Objects{}, fmt.Errorf("fairway/file: document %d: %w", doc, err)
		}
		if t := bytes.TrimSpace(js); len(t) == 0 || bytes.Equal(t, []byte("null")) {
			continue // only comments or "---"
		}
		if err := objs.add(js, ""); err != nil {
			return Objects{}, fmt.Errorf("fairway/file: document %d: %w", doc, err)
		}
	}
}

// add decodes one JSON object (a list's items recursively); where says where
// it is inside its document, for errors.
func (o *Objects) add(js []byte, where string) error {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		} `json:"metadata"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(js, &meta); err != nil {
		return fmt.Errorf("%snot a Kubernetes object: %v", where, err)
	}
	if meta.Kind == "" {
		return fmt.Errorf("%sno kind", where)
	}
	switch {
	case meta.Kind == "Service" && meta.APIVersion == "v1":
		var svc corev1.Service
		if err := json.Unmarshal(js, &svc); err != nil {
			return fmt.Errorf("%sService %s/%s: %v", where, meta.Metadata.Namespace, meta.Metadata.Name, err)
		}
		defaultNamespace(&svc.ObjectMeta.Namespace)
		o.Services = append(o.Services, &svc)
	case meta.Kind == "EndpointSlice" && meta.APIVersion == "discovery.k8s.io/v1":
		var sl discoveryv1.EndpointSlice
		if err := json.Unmarshal(js, &sl); err != nil {
			return fmt.Errorf("%sEndpointSlice %s/%s: %v", where, meta.Metadata.Namespace, meta.Metadata.Name, err)
		}
		defaultNamespace(&sl.ObjectMeta.Namespace)
		o.EndpointSlices = append(o.EndpointSlices, &sl)
	case strings.HasSuffix(meta.Kind, "List"):
		for i, item := range meta.Items {
			if err := o.add(item, fmt.Sprintf("%sitem %d: ", where, i)); err != nil {
				return err
			}
		}
	default:
		o.Skipped = append(o.Skipped, fmt.Sprintf("%s %s %s/%s", meta.APIVersion, meta.Kind, meta.Metadata.Namespace, meta.Metadata.Name))
	}
	return nil
}

// defaultNamespace gives an object without a namespace the "default" one,
// as kubectl apply would.
func defaultNamespace(ns *string) {
	if *ns == "" {
		*ns = "default"
	}
}
