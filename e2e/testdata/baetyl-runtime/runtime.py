"""A minimal runtime that follows the Baetyl function-runtime convention the
way the original Baetyl Python runtime does: a plain grpc (sync) server on
BAETYL_SERVICE_INSTANCE_ADDRESS, functions from the -c config file imported
with sys.path, and errors raised as Exception("[UserCodeInvoke] ", err).
It knows nothing of polyfn; the end-to-end tests run it to prove that a
foreign call-protocol runtime works unmodified."""

import argparse
import importlib
import json
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def message_class():
    f = descriptor_pb2.FileDescriptorProto(name="baetyl_fixture.proto", package="baetyl", syntax="proto3")
    m = f.message_type.add(name="FunctionMessage")
    T = descriptor_pb2.FieldDescriptorProto
    for name, num, typ in [("ID", 1, T.TYPE_UINT64), ("QOS", 2, T.TYPE_UINT32), ("Topic", 3, T.TYPE_STRING),
                           ("Payload", 4, T.TYPE_BYTES), ("Timestamp", 10, T.TYPE_SINT64),
                           ("FunctionName", 11, T.TYPE_STRING), ("FunctionInvokeID", 12, T.TYPE_STRING)]:
        m.field.add(name=name, number=num, type=typ, label=T.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("baetyl.FunctionMessage"))


FunctionMessage = message_class()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", default=os.path.join("etc", "baetyl", "service.yml"))
    args = parser.parse_args()
    with open(args.c) as f:
        config = yaml.safe_load(f)
    functions = {}
    for fc in config["functions"]:
        sys.path.append(fc["codedir"])
        parts = fc["handler"].split(".")
        module = importlib.import_module(".".join(parts[:-1]))
        functions[fc["name"]] = getattr(module, parts[-1])

    def call(request, context):
        if request.FunctionName not in functions:
            raise Exception("function not found")
        ctx = {"messageQOS": request.QOS, "messageTopic": request.Topic,
               "messageTimestamp": request.Timestamp, "functionName": request.FunctionName,
               "functionInvokeID": request.FunctionInvokeID, "invokeid": request.FunctionInvokeID}
        msg = {}
        if request.Payload:
            try:
                msg = json.loads(request.Payload)
            except BaseException:
                msg = request.Payload
        try:
            msg = functions[request.FunctionName](msg, ctx)
        except BaseException as err:
            raise Exception("[UserCodeInvoke] ", err)
        if msg is None:
            request.Payload = b""
        elif isinstance(msg, bytes):
            request.Payload = msg
        else:
            request.Payload = json.dumps(msg).encode("utf-8")
        return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=FunctionMessage.FromString, response_serializer=FunctionMessage.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("baetyl.Function", {"Call": handler}),))
    server.add_insecure_port(os.environ["BAETYL_SERVICE_INSTANCE_ADDRESS"])
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(5).wait()


if __name__ == "__main__":
    main()
