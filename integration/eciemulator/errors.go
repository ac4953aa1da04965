package eciemulator

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
