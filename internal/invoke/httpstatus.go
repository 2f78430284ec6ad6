package invoke

import "net/http"

// HTTPStatus maps an invocation error kind to the HTTP status the HTTP
// trigger answers it with (and failed invocations are logged with).
func HTTPStatus(k Kind) int {
	switch k {
	case KindNotFound:
		return http.StatusNotFound
	case KindTooLarge:
		return http.StatusRequestEntityTooLarge
	case KindOverloaded:
		return http.StatusTooManyRequests
	case KindWorkerCrashed, KindWorkerStart, KindInvalidResponse:
		return http.StatusBadGateway
	case KindTimeout:
		return http.StatusGatewayTimeout
	case KindUnavailable:
		return http.StatusServiceUnavailable
	case KindBadRequest:
		return http.StatusBadRequest
	case KindMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case KindInternal:
		return http.StatusInternalServerError
	}
	return http.StatusInternalServerError
}
