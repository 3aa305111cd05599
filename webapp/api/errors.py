from flask import jsonify


def api_error(code: str, message: str, status: int, **extra):
    response = jsonify(error={"code": code, "message": message}, **extra)
    response.status_code = status
    return response
