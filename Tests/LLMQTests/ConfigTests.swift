import Foundation
import LLMQ
import Testing

@Suite struct ConfigTests {
    func write(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "llmq-config-\(UUID().uuidString).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func readsTheIssueExample() throws {
        let path = try write("""
            redis: redis://127.0.0.1:6390/2
            workers: 3
            modes: {chat: {concurrency: 64}, embed: {concurrency: 4}}
            providers:
              local: {kind: openai, base_url: "http://127.0.0.1:8080/v1", timeout_s: 60, idle_timeout_s: 15}
              backup: {kind: openai, base_url: "http://127.0.0.1:8081/v1"}
            routes: {fast: ["local/gpt-4o-mini", "backup/gpt-4o-mini"]}
            """)
        let c = try ConfigLoader.load(path: path, environment: ["LLMQ_WORKERS": "5"])
        #expect(c.workers == 5)
        #expect(c.modes["embed"]?.concurrency == 4)
        #expect(c.providers["local"]?.idleTimeoutS == 15)
        let r = try ProviderRegistry(config: c, environment: [:])
        let targets = try r.resolve("fast")
        #expect(targets.map { "\($0.provider.name)/\($0.model)" } == ["local/gpt-4o-mini", "backup/gpt-4o-mini"])
        #expect(try r.resolve("backup/llama").first?.model == "llama")
        #expect(throws: LLMQError.self) { try r.resolve("nope") }
        #expect(try RedisURL(c.redis).database == 2)
    }

    @Test(arguments: [
        ("workers: 0", "workers must be from 1 to 256"),
        ("colour: blue", "unknown key \"colour\""),
        ("providers: {x: {kind: magic}}", "providers.x.kind \"magic\" is not one of"),
        ("providers: {x: {kind: openai, base_url: ftp://h}}", "providers.x.base_url must start with http"),
        ("routes: {r: [\"nowhere/m\"]}", "target \"nowhere/m\" must be PROVIDER/MODEL"),
        ("modes: {chat: {concurrency: 0}}", "modes.chat.concurrency must be from 1"),
        ("redis: rediss://h:6380", "TLS to Redis is not available"),
        ("workers: many", "workers must be"),
    ])
    func errorsNameTheKeyAndTheFile(_ text: String, message: String) throws {
        let path = try write(text)
        do {
            _ = try ConfigLoader.load(path: path, environment: [:])
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.message.contains(message), "got: \(error.message)")
            #expect(error.message.contains(path) || message.contains("TLS"), "got: \(error.message)")
        }
    }

    @Test func redisURLs() throws {
        let u = try RedisURL("redis://app:s3cret@10.0.0.5:6400/3", environment: [:])
        #expect(u.username == "app" && u.password == "s3cret" && u.port == 6400 && u.database == 3)
        #expect(!u.description.contains("s3cret"))
        let e = try RedisURL("redis://127.0.0.1", environment: ["LLMQ_REDIS_PASSWORD": "pw"])
        #expect(e.password == "pw" && e.port == 6379)
    }
}
