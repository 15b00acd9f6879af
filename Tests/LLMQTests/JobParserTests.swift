import LLMQ
import Testing

@Suite struct JobParserTests {
    let parser = JobParser(maxBytes: 4096)

    func reject(_ text: String, mode: Mode = "chat") -> JobRejection? {
        do {
            _ = try parser.parse(Array(text.utf8), mode: mode)
            return nil
        } catch {
            return error
        }
    }

    @Test func acceptsTheProtocolExample() throws {
        let job = try parser.parse(Array("""
            {"id":"req-42","model":"fast","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Name three rivers."}],
             "params":{"max_tokens":256,"temperature":0.2},"timeout_s":60,"metadata":{"tenant":"acme"}}
            """.utf8), mode: "chat")
        #expect(job.id == "req-42")
        #expect(job.model == "fast")
        #expect(job.messages.count == 2)
        #expect(job.params.maxTokens == 256)
        #expect(job.params.temperature == 0.2)
        #expect(job.timeoutS == 60)
        #expect(job.metadata == ["tenant": "acme"])
        #expect(job.attempts == 0)
    }

    @Test(arguments: [
        ("not json", nil as String?, "not valid JSON"),
        ("[1,2]", nil, "must be a JSON object"),
        (#"{"model":"m","messages":[]}"#, nil, "has no \"id\""),
        (#"{"id":42,"model":"m"}"#, nil, "\"id\" must be a string"),
        (#"{"id":"has space","model":"m"}"#, nil, "is not 1-128 characters"),
        (#"{"id":"a{b}","model":"m"}"#, nil, "is not 1-128 characters"),
        (#"{"id":"ok-1","messages":[{"role":"user","content":"x"}]}"#, "ok-1", "has no \"model\""),
        (#"{"id":"ok-2","model":7,"messages":[{"role":"user","content":"x"}]}"#, "ok-2", "\"model\" must be a non-empty string"),
        (#"{"id":"ok-3","model":"m","messages":"hi"}"#, "ok-3", "\"messages\" must be a list"),
        (#"{"id":"ok-4","model":"m","messages":[{"role":"wizard","content":"x"}]}"#, "ok-4", "is not one of system"),
        (#"{"id":"ok-5","model":"m","messages":[{"role":"user","content":3}]}"#, "ok-5", "content must be a string or a list"),
        (#"{"id":"ok-6","model":"m","messages":[{"role":"user","content":"x"}],"params":{"max_tokens":"9"}}"#, "ok-6", "params.max_tokens"),
        (#"{"id":"ok-7","model":"m","messages":[{"role":"user","content":"x"}],"params":{"best_of":2}}"#, "ok-7", "unknown parameter params.best_of"),
        (#"{"id":"ok-8","model":"m","messages":[{"role":"user","content":"x"}],"timeout_s":-1}"#, "ok-8", "\"timeout_s\" must be a number greater than 0"),
        (#"{"id":"ok-9","model":"m","mode":"embed","messages":[{"role":"user","content":"x"}]}"#, "ok-9", "pushed on the \"chat\" queue"),
        (#"{"id":"ok-10","model":"m"}"#, "ok-10", "a chat job needs \"messages\""),
        (#"{"id":"ok-11","model":"m","messages":[{"role":"user","content":"x"}],"colour":"red"}"#, "ok-11", "unknown field \"colour\""),
        (#"{"id":"ok-12","model":"m","messages":[{"role":"user","content":"x"}],"metadata":[1]}"#, "ok-12", "\"metadata\" must be an object"),
        (#"{"id":"salvaged-1","model":"m",broken"#, "salvaged-1", "not valid JSON"),
    ])
    func rejectsWithAClearMessage(_ text: String, id: String?, message: String) throws {
        let r = try #require(reject(text))
        #expect(r.error.code == .invalidJob)
        #expect(r.id == id)
        #expect(r.error.message.contains(message), "message was: \(r.error.message)")
    }

    @Test func refusesOversizedJobsAndDeepNesting() throws {
        let big = #"{"id":"big","model":"m","prompt":""# + String(repeating: "x", count: 5000) + #""}"#
        #expect(reject(big, mode: "complete")?.error.message.contains("over the limit") == true)
        let deep = #"{"id":"deep","model":"m","metadata":"# + String(repeating: "[", count: 600) + String(repeating: "]", count: 600) + "}"
        do {
            _ = try JobParser(maxBytes: 1 << 20).parse(Array(deep.utf8), mode: "chat")
            Issue.record("accepted 600 levels of nesting")
        } catch {
            #expect(error.error.code == .invalidJob)
        }
    }

    @Test func refusesInvalidUTF8() throws {
        var bytes = Array(#"{"id":"u1","model":"m","messages":[{"role":"user","content":"x"#.utf8)
        bytes += [0xC3, 0x28]
        bytes += Array(#""}]}"#.utf8)
        #expect(throws: JobRejection.self) { try parser.parse(bytes, mode: "chat") }
    }

    @Test func modesNeedTheirInput() throws {
        #expect(reject(#"{"id":"c1","model":"m"}"#, mode: "complete")?.error.message.contains("needs \"prompt\"") == true)
        #expect(reject(#"{"id":"e1","model":"m"}"#, mode: "embed")?.error.message.contains("needs \"input\"") == true)
        let e = try parser.parse(Array(#"{"id":"e2","model":"m","input":["a","b"]}"#.utf8), mode: "embed")
        #expect(e.input == ["a", "b"])
    }
}
