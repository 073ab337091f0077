package fakeec2

import (
	"errors"
	"fmt"
	"net/http"
)

// APIError is an error as EC2 reports it: a code, a message and the HTTP
// status the Query API answers with. Every model operation that fails returns
// one, so the Query layer, the control API and Go callers see the same thing.
type APIError struct {
	Code    string
	Message string
	Status  int
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// ErrorCode returns the EC2 error code, mirroring smithy.APIError.
func (e *APIError) ErrorCode() string { return e.Code }

// ErrorMessage returns the EC2 error message, mirroring smithy.APIError.
func (e *APIError) ErrorMessage() string { return e.Message }

// errorStatus is the HTTP status EC2 uses for codes that are not plain 400s.
var errorStatus = map[string]int{
	"RequestLimitExceeded":  http.StatusServiceUnavailable,
	"Unavailable":           http.StatusServiceUnavailable,
	"ServiceUnavailable":    http.StatusServiceUnavailable,
	"InternalError":         http.StatusInternalServerError,
	"InternalFailure":       http.StatusInternalServerError,
	"UnauthorizedOperation": http.StatusForbidden,
	"SignatureDoesNotMatch": http.StatusForbidden,
	"AuthFailure":           http.StatusUnauthorized,
	"DryRunOperation":       http.StatusPreconditionFailed,
}

// StatusForCode returns the HTTP status EC2 answers an error code with.
func StatusForCode(code string) int {
	if s, ok := errorStatus[code]; ok {
		return s
	}
	return http.StatusBadRequest
}

// Errorf builds an APIError with the status EC2 uses for code.
func Errorf(code, format string, args ...any) *APIError {
	return &APIError{Code: code, Message: fmt.Sprintf(format, args...), Status: StatusForCode(code)}
}

// AsAPIError extracts an *APIError from err, if there is one.
func AsAPIError(err error) (*APIError, bool) {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae, true
	}
	return nil, false
}

func errMissing(name string) *APIError {
	return Errorf("MissingParameter", "The request must contain the parameter %s", name)
}

func errInvalid(format string, args ...any) *APIError {
	return Errorf("InvalidParameterValue", format, args...)
}

func errCombination(format string, args ...any) *APIError {
	return Errorf("InvalidParameterCombination", format, args...)
}

func errENINotFound(id string) *APIError {
	return Errorf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
}

func errInstanceNotFound(id string) *APIError {
	return Errorf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
}

func errSubnetNotFound(id string) *APIError {
	return Errorf("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
}

func errVPCNotFound(id string) *APIError {
	return Errorf("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", id)
}

func errGroupNotFound(id string) *APIError {
	return Errorf("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
}

func errAttachmentNotFound(id string) *APIError {
	return Errorf("InvalidAttachmentID.NotFound", "The network interface attachment ID '%s' does not exist", id)
}
