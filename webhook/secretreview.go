package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/util/json"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// secretReviews serves the secret validator on SecretsPath as
// controller-runtime's admission.WithValidator does (same requests
// accepted, same answers), but decodes the AdmissionReview and the Secrets
// in it in one pass: controller-runtime decodes the review with the object
// as raw JSON, then the object, each time reading the JSON once for its
// kind and once for its fields, and a relay secret's few kilobytes of
// base64 were a fifth of a review's CPU. It is also the admission.Handler
// of Handlers, for a request whose objects are raw JSON.
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
	if err := kjson.Unmarshal(body, &review); err != nil {
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
		if err := kjson.Unmarshal(raw, &sec); err != nil {
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
	gvk := sec.GroupVersionKind()
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
