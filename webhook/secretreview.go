package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	sigsjson "sigs.k8s.io/json"
)

// secretReviews serves the secret validator on SecretsPath as
// controller-runtime's admission.WithValidator does (same requests
// accepted, same answers), but decodes the AdmissionReview and the Secrets
// in it in one pass: controller-runtime decodes the review with the object
// as raw JSON, then the object, each time reading the JSON once for its
// kind and once for its fields, and a relay secret's few kilobytes of
// base64 were a fifth of a review's CPU. It is also the admission.Handler
// of Handlers, for a request whose objects are raw JSON.
//
// It refuses, as a bad request, a body whose meaning depends on how it is
// read, which no API server sends (see decodeStrict): a field twice, or a
// kind or apiVersion beside a key that differs from it only by case.
type secretReviews struct {
	v *secretValidator
}

var (
	_ http.Handler      = &secretReviews{}
	_ admission.Handler = &secretReviews{}
)

// maxReviewBytes is controller-runtime's limit on a review's body: two
// objects of 3 MB and the rest.
const maxReviewBytes = 7 << 20

// secretReview is an AdmissionReview whose object and old object are
// decoded as Secrets.
type secretReview struct {
	TypeKind   string        `json:"kind,omitempty"`
	APIVersion string        `json:"apiVersion,omitempty"`
	Request    secretRequest `json:"request"`
}

// secretRequest is an AdmissionRequest with its objects as Secrets (its
// own Object and OldObject, as raw JSON, stay empty).
type secretRequest struct {
	admissionv1.AdmissionRequest `json:",inline"`
	Object                       *corev1.Secret `json:"object,omitempty"`
	OldObject                    *corev1.Secret `json:"oldObject,omitempty"`
}

var (
	secretGVK = corev1.SchemeGroupVersion.WithKind("Secret")
	reviewGVK = admissionv1.SchemeGroupVersion.WithKind("AdmissionReview")
)

func (h *secretReviews) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := logf.Log.WithName("admission").WithValues("webhook", SecretsPath)
	if r.Body == nil || r.Body == http.NoBody {
		err := errors.New("request body is empty")
		log.Error(err, "bad request")
		writeReview(w, nil, admission.Errored(http.StatusBadRequest, err))
		return
	}
	defer r.Body.Close()
	limited := &io.LimitedReader{R: r.Body, N: maxReviewBytes}
	body, err := io.ReadAll(limited)
	if err != nil {
		log.Error(err, "unable to read the body from the incoming request")
		writeReview(w, nil, admission.Errored(http.StatusBadRequest, err))
		return
	}
	if limited.N <= 0 {
		err := fmt.Errorf("request entity is too large; limit is %d bytes", maxReviewBytes)
		log.Error(err, "unable to read the body from the incoming request; limit reached")
		writeReview(w, nil, admission.Errored(http.StatusRequestEntityTooLarge, err))
		return
	}
	if contentType := r.Header.Get("Content-Type"); contentType != "application/json" {
		err := fmt.Errorf("contentType=%s, expected application/json", contentType)
		log.Error(err, "unable to process a request with unknown content type")
		writeReview(w, nil, admission.Errored(http.StatusBadRequest, err))
		return
	}
	var review secretReview
	err = decodeStrict(body, &review, "", "request.object", "request.oldObject")
	if err == nil {
		// as controller-runtime, which reads the review's kind first
		_, err = schema.ParseGroupVersion(review.APIVersion)
	}
	if err != nil {
		log.Error(err, "unable to decode the request")
		writeReview(w, nil, admission.Errored(http.StatusBadRequest, err))
		return
	}
	req := admission.Request{AdmissionRequest: review.Request.AdmissionRequest}
	if review.Request.Object != nil {
		req.Object.Object = review.Request.Object
	}
	if review.Request.OldObject != nil {
		req.OldObject.Object = review.Request.OldObject
	}
	gvk := schema.FromAPIVersionAndKind(review.APIVersion, review.TypeKind)
	writeReview(w, &gvk, h.review(r.Context(), req, review.Request.Object, review.Request.OldObject))
}

// Handle reviews req, whose objects are raw JSON.
func (h *secretReviews) Handle(ctx context.Context, req admission.Request) admission.Response {
	var obj, old *corev1.Secret
	decode := func(raw []byte) (*corev1.Secret, error) {
		if len(raw) == 0 {
			return nil, nil
		}
		var sec corev1.Secret
		if err := decodeStrict(raw, &sec, ""); err != nil {
			return nil, err
		}
		return &sec, nil
	}
	var err error
	switch req.Operation {
	case admissionv1.Create:
		obj, err = decode(req.Object.Raw)
	case admissionv1.Update:
		if obj, err = decode(req.Object.Raw); err == nil {
			old, err = decode(req.OldObject.Raw)
		}
	case admissionv1.Delete:
		old, err = decode(req.OldObject.Raw)
	}
	if err != nil {
		return completed(req, admission.Errored(http.StatusBadRequest, err))
	}
	return h.review(ctx, req, obj, old)
}

// review answers req as controller-runtime's validator does, with its
// objects decoded: obj for a create and an update, old for an update and a
// delete (nil when the request has none).
func (h *secretReviews) review(ctx context.Context, req admission.Request, obj, old *corev1.Secret) (resp admission.Response) {
	defer func() {
		if r := recover(); r != nil {
			resp = completed(req, admission.Errored(http.StatusInternalServerError, fmt.Errorf("panic: %v [recovered]", r)))
		}
	}()
	ctx = admission.NewContextWithRequest(ctx, req)
	var (
		warnings admission.Warnings
		err      error
	)
	switch req.Operation {
	case admissionv1.Connect:
	case admissionv1.Create:
		if err := isSecret(obj); err != nil {
			return completed(req, admission.Errored(http.StatusBadRequest, err))
		}
		warnings, err = h.v.ValidateCreate(ctx, obj)
	case admissionv1.Update:
		for _, sec := range []*corev1.Secret{obj, old} {
			if err := isSecret(sec); err != nil {
				return completed(req, admission.Errored(http.StatusBadRequest, err))
			}
		}
		warnings, err = h.v.ValidateUpdate(ctx, old, obj)
	case admissionv1.Delete:
		if err := isSecret(old); err != nil {
			return completed(req, admission.Errored(http.StatusBadRequest, err))
		}
		warnings, err = h.v.ValidateDelete(ctx, old)
	default:
		return completed(req, admission.Errored(http.StatusBadRequest, fmt.Errorf("unknown operation %q", req.Operation)))
	}
	if err != nil {
		var status apierrors.APIStatus
		if errors.As(err, &status) {
			s := status.Status()
			return completed(req, admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Result: &s}}.WithWarnings(warnings...))
		}
		return completed(req, admission.Denied(err.Error()).WithWarnings(warnings...))
	}
	return completed(req, admission.Allowed("").WithWarnings(warnings...))
}

// isSecret returns an error, as controller-runtime's decoder does, when a
// request's object is missing or is not a v1 Secret (a missing kind or
// version is taken to be the Secret's).
func isSecret(sec *corev1.Secret) error {
	if sec == nil {
		return errors.New("there is no content to decode")
	}
	gv, err := schema.ParseGroupVersion(sec.APIVersion)
	if err != nil {
		return err
	}
	gvk := gv.WithKind(sec.Kind)
	if gvk.Kind == "" {
		gvk.Kind = secretGVK.Kind
	}
	if gvk.Version == "" && gvk.Group == secretGVK.Group {
		gvk.Group, gvk.Version = secretGVK.Group, secretGVK.Version
	}
	if gvk != secretGVK {
		return fmt.Errorf("unable to decode %s into *v1.Secret", gvk)
	}
	return nil
}

// maxStrictErrors is how many strict errors sigs.k8s.io/json reports at
// most: past them, a duplicate or a case variant may go unreported, so a
// body with that many is refused.
const maxStrictErrors = 100

// decodeStrict decodes data into v as the API server decodes JSON (keys
// matched with their case, numbers kept as integers, fields unknown here
// ignored, as a newer API server may add some), and refuses what no API
// server sends and what encoding/json and controller-runtime would read
// otherwise than this decoding:
//
//   - a field twice (a duplicate key of an object or a map): decoding
//     merges the second object into the first or keeps the last value,
//     where controller-runtime keeps the last object whole;
//   - at the top of the objects whose kind is looked up (at the paths
//     kinded, "" for data itself), a key that is not "kind" or "apiVersion"
//     but equal to one without regard to case (Unicode's simple folding, as
//     encoding/json): controller-runtime reads the kind and version so,
//     then the fields with their case.
//
// The error names the fields, as the API server's strict decoding does.
func decodeStrict(data []byte, v any, kinded ...string) error {
	strictErrs, err := sigsjson.UnmarshalStrict(data, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil || len(strictErrs) == 0 {
		return err
	}
	var refused []error
	for _, e := range strictErrs {
		var path string
		if fe, ok := e.(sigsjson.FieldError); ok {
			path = fe.FieldPath()
		}
		// An unknown field is allowed unless it stands for a kind or an
		// apiVersion; a duplicate, or an error of another sort, is not.
		if !strings.HasPrefix(e.Error(), "unknown field ") || path == "" {
			refused = append(refused, e)
			continue
		}
		for _, k := range kinded {
			key := path
			if k != "" {
				var ok bool
				if key, ok = strings.CutPrefix(path, k+"."); !ok {
					continue
				}
			}
			if strings.EqualFold(key, "kind") || strings.EqualFold(key, "apiVersion") {
				refused = append(refused, fmt.Errorf("field %+q differs from kind or apiVersion only by case", path))
				break
			}
		}
	}
	if len(strictErrs) >= maxStrictErrors {
		refused = append(refused, fmt.Errorf("%d or more unknown or duplicate fields", maxStrictErrors))
	}
	if len(refused) == 0 {
		return nil
	}
	return runtime.NewStrictDecodingError(refused)
}

// completed is resp with req's UID and a status code, as
// controller-runtime's Webhook completes it.
func completed(req admission.Request, resp admission.Response) admission.Response {
	_ = resp.Complete(req) // it fails only on patches, which a validator has none of
	return resp
}

// writeReview writes resp as an AdmissionReview of kind gvk (v1 when empty;
// none for an answer to a request that could not be read), as
// controller-runtime does.
func writeReview(w io.Writer, gvk *schema.GroupVersionKind, resp admission.Response) {
	ar := admissionv1.AdmissionReview{Response: &resp.AdmissionResponse}
	switch {
	case gvk == nil:
	case gvk.Empty():
		ar.SetGroupVersionKind(reviewGVK)
	default:
		ar.SetGroupVersionKind(*gvk)
	}
	if err := json.NewEncoder(w).Encode(ar); err != nil {
		logf.Log.WithName("admission").Error(err, "unable to encode and write the response", "webhook", SecretsPath)
		failed := admission.Errored(http.StatusInternalServerError, err)
		_ = json.NewEncoder(w).Encode(admissionv1.AdmissionReview{Response: &failed.AdmissionResponse})
	}
}
