package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// head is what every manifest has, read before its kind is known.
type head struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Items      json.RawMessage `json:"items"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// document decodes one YAML or JSON document into res.
func (d *Decoder) document(res *Result, src Source, raw []byte) {
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		res.fail(src, "invalid YAML: %v", err)
		return
	}
	if t := bytes.TrimSpace(js); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return
	}
	d.object(res, src, js, nil)
}

// object decodes one manifest; inList is the kind of the List it is an
// item of, nil outside a List.
func (d *Decoder) object(res *Result, src Source, js []byte, inList *schema.GroupVersionKind) {
	if t := bytes.TrimSpace(js); len(t) == 0 || t[0] != '{' {
		res.fail(src, "not an object: a manifest is a map with apiVersion, kind and metadata")
		return
	}
	var h head
	if err := json.Unmarshal(js, &h); err != nil {
		res.fail(src, "failed to read apiVersion, kind and metadata: %v", err)
		return
	}
	if inList != nil && inList.Kind != "List" && h.APIVersion == "" && h.Kind == "" {
		// The items of a typed list (SecretList) may leave out their kind.
		h.APIVersion, h.Kind = inList.GroupVersion().String(), strings.TrimSuffix(inList.Kind, "List")
	}
	switch {
	case h.APIVersion == "":
		res.fail(src, "missing apiVersion: every manifest names one, for example apiVersion: v1")
		return
	case h.Kind == "":
		res.fail(src, "missing kind: every manifest names one, for example kind: Secret")
		return
	}
	gv, err := schema.ParseGroupVersion(h.APIVersion)
	if err != nil {
		res.fail(src, "invalid apiVersion %q: %v", h.APIVersion, err)
		return
	}
	gvk := gv.WithKind(h.Kind)
	if d.isList(gvk) {
		if inList != nil {
			res.fail(src, "is a %s inside a %s: put its items in the outer list", gvk.Kind, inList.Kind)
			return
		}
		d.list(res, src, gvk, h.Items)
		return
	}
	obj := Object{Source: src, APIVersion: h.APIVersion, Kind: h.Kind, Namespace: h.Metadata.Namespace, Name: h.Metadata.Name}
	versions, ok := d.kinds[gvk.GroupKind()]
	if !ok {
		res.Objects = append(res.Objects, obj)
		return
	}
	if !slices.Contains(versions, gv.String()) {
		res.fail(src, "%s %q: apiVersion %s is not one this build reads: use %s", h.Kind, h.Metadata.Name, h.APIVersion, strings.Join(versions, " or "))
		return
	}
	decoded, err := d.typed(gvk, js)
	if err != nil {
		res.fail(src, "%s %q: %v", h.Kind, h.Metadata.Name, err)
		return
	}
	obj.Decoded = decoded
	res.Objects = append(res.Objects, obj)
}

// isList reports whether gvk is a List: v1 List, or a typed list of a kind
// the scheme knows.
func (d *Decoder) isList(gvk schema.GroupVersionKind) bool {
	if gvk.Kind == "List" {
		return true
	}
	item, ok := strings.CutSuffix(gvk.Kind, "List")
	return ok && item != "" && d.scheme.Recognizes(gvk) && d.scheme.Recognizes(gvk.GroupVersion().WithKind(item))
}

func (d *Decoder) list(res *Result, src Source, gvk schema.GroupVersionKind, items json.RawMessage) {
	if t := bytes.TrimSpace(items); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(items, &raws); err != nil {
		res.fail(src, "%s: items is not a list of objects: %v", gvk.Kind, err)
		return
	}
	for i, raw := range raws {
		item := src
		item.Item = i + 1
		d.object(res, item, raw, &gvk)
	}
}

// typed decodes js into the scheme's type for gvk.
func (d *Decoder) typed(gvk schema.GroupVersionKind, js []byte) (client.Object, error) {
	into, err := d.scheme.New(gvk)
	if err != nil {
		return nil, err
	}
	out, _, err := d.codec.Decode(js, &gvk, into)
	if err != nil {
		return nil, err
	}
	obj, ok := out.(client.Object)
	if !ok {
		return nil, errors.New("not an object with metadata")
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	if sec, ok := obj.(*corev1.Secret); ok {
		mergeStringData(sec)
	}
	return obj, nil
}

// mergeStringData moves stringData into data, as the API server does
// before admission: the webhook never sees stringData.
func mergeStringData(sec *corev1.Secret) {
	if len(sec.StringData) == 0 {
		return
	}
	if sec.Data == nil {
		sec.Data = make(map[string][]byte, len(sec.StringData))
	}
	for k, v := range sec.StringData {
		sec.Data[k] = []byte(v)
	}
	sec.StringData = nil
}
