package emulator

import "net/http"

// apiError is an ECI error answer.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errf(status int, code, msg string) *apiError {
	return &apiError{Status: status, Code: code, Message: msg}
}

func missingParam(name string) *apiError {
	return errf(http.StatusBadRequest, "MissingParameter", "The input parameter \""+name+"\" that is mandatory for processing this request is not supplied.")
}

func invalidParam(name, why string) *apiError {
	return errf(http.StatusBadRequest, "InvalidParameter", "The specified parameter \""+name+"\" is not valid: "+why)
}

func notFound(id string) *apiError {
	return errf(http.StatusBadRequest, "InvalidContainerGroup.NotFound", "The specified container group \""+id+"\" is not found.")
}

// The research notes record no published code for a missing virtual node
// or image cache; these follow the container group's pattern.

func virtualNodeNotFound(id string) *apiError {
	return errf(http.StatusBadRequest, "InvalidVirtualNode.NotFound", "The specified virtual node \""+id+"\" is not found.")
}

func imageCacheNotFound(id string) *apiError {
	return errf(http.StatusBadRequest, "InvalidImageCache.NotFound", "The specified image cache \""+id+"\" is not found.")
}

func incorrectStatus(what, id, status, allowed string) *apiError {
	return errf(http.StatusBadRequest, "IncorrectStatus", "The current status of the "+what+" "+id+" is "+status+"; the operation needs "+allowed+".")
}

// statusOf gives the HTTP status ECI answers an error code with.
func statusOf(code string) int {
	switch code {
	case "InternalError", "UnknownError":
		return http.StatusInternalServerError
	case "ServiceUnavailable":
		return http.StatusServiceUnavailable
	case "InvalidAccessKeyId.NotFound":
		return http.StatusNotFound
	case "Forbidden.RAM", "Forbidden":
		return http.StatusForbidden
	}
	return http.StatusBadRequest
}
