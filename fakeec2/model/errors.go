package model

import (
	"errors"
	"fmt"
)

// APIError is an error as EC2 reports it: a code and a message. Every model
// operation that fails returns one, so the Query layer, the control API and
// Go callers see the same thing.
type APIError struct {
	Code    string
	Message string
	// Status, when not zero, is the HTTP status to answer with instead of
	// EC2's status for Code (a fault rule may set it).
	Status int
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// ErrorCode returns the EC2 error code, mirroring smithy.APIError.
func (e *APIError) ErrorCode() string { return e.Code }

// ErrorMessage returns the EC2 error message, mirroring smithy.APIError.
func (e *APIError) ErrorMessage() string { return e.Message }

// Errorf builds an APIError.
func Errorf(code, format string, args ...any) *APIError {
	return &APIError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsAPIError extracts an *APIError from err, if there is one.
func AsAPIError(err error) (*APIError, bool) {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae, true
	}
	return nil, false
}

// ErrMissing is MissingParameter for a required parameter.
func ErrMissing(name string) *APIError {
	return Errorf("MissingParameter", "The request must contain the parameter %s", name)
}

// ErrInvalid is InvalidParameterValue.
func ErrInvalid(format string, args ...any) *APIError {
	return Errorf("InvalidParameterValue", format, args...)
}

// ErrCombination is InvalidParameterCombination.
func ErrCombination(format string, args ...any) *APIError {
	return Errorf("InvalidParameterCombination", format, args...)
}

// ErrENINotFound is InvalidNetworkInterfaceID.NotFound.
func ErrENINotFound(id string) *APIError {
	return Errorf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
}

// ErrInstanceNotFound is InvalidInstanceID.NotFound.
func ErrInstanceNotFound(id string) *APIError {
	return Errorf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
}

// ErrSubnetNotFound is InvalidSubnetID.NotFound.
func ErrSubnetNotFound(id string) *APIError {
	return Errorf("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
}

// ErrVPCNotFound is InvalidVpcID.NotFound.
func ErrVPCNotFound(id string) *APIError {
	return Errorf("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", id)
}

// ErrGroupNotFound is InvalidGroup.NotFound.
func ErrGroupNotFound(id string) *APIError {
	return Errorf("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
}

// ErrAttachmentNotFound is InvalidAttachmentID.NotFound.
func ErrAttachmentNotFound(id string) *APIError {
	return Errorf("InvalidAttachmentID.NotFound", "The network interface attachment ID '%s' does not exist", id)
}
