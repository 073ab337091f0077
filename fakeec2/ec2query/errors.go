package ec2query

import "net/http"

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
