/// Streaming answers and error bodies of each provider, written by hand from the
/// providers' API documentation (event order, field names, framing: `event:` lines,
/// `data:` with and without a space, NDJSON), kept byte for byte as a server sends
/// them. Text holds multi-byte UTF-8 (ü, ✓, 🙂) so replays split inside characters.
enum ProviderTranscripts {
    // MARK: OpenAI (chat.completion.chunk, tool calls, usage chunk, [DONE])

    static let openAIToolCall = """
        data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}

        data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":"}}]},"finish_reason":null}]}

        data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\"Zürich\\"}"}}]},"finish_reason":null}]}

        data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

        data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":61,"completion_tokens":17,"total_tokens":78}}

        data: [DONE]


        """

    // MARK: Anthropic Messages (SSE with event: lines)

    static let anthropicText = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":10,"output_tokens":1}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: ping
        data: {"type": "ping"}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Grüße"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" aus \\"Zürich\\" ✓ 🙂\\n"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

        event: message_stop
        data: {"type":"message_stop"}


        """

    /// A text block, then a tool_use block whose input arrives as input_json_delta pieces.
    static let anthropicToolUse = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_02","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: content_block_start
        data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x","name":"get_weather","input":{}}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": \\"Zü"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"rich\\"}"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":1}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

        event: message_stop
        data: {"type":"message_stop"}


        """

    /// An overload reported inside a 200 stream.
    static let anthropicOverloadedMidStream = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_03","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":1}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Once"}}

        event: error
        data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


        """

    static let anthropic429Body = #"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit (https://docs.anthropic.com/en/api/rate-limits); see the response headers for current usage."},"request_id":"req_011"}"#
    static let anthropic529Body = #"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_012"}"#
    static let anthropic404Body = #"{"type":"error","error":{"type":"not_found_error","message":"model: claude-nonexistent"},"request_id":"req_013"}"#

    // MARK: Gemini streamGenerateContent?alt=sse (data: lines, CRLF framing)

    static let geminiText =
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Grüße \"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 2,\"totalTokenCount\": 11},\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\n"
        + "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"aus Zürich ✓ 🙂\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 7,\"thoughtsTokenCount\": 3,\"totalTokenCount\": 19},\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\n"

    static let geminiFunctionCall =
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"get_weather\",\"args\": {\"city\": \"Zürich\",\"unit\": \"°C\"}}}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 40,\"candidatesTokenCount\": 8,\"totalTokenCount\": 48},\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\n"

    static let geminiPromptBlocked =
        "data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"},\"usageMetadata\": {\"promptTokenCount\": 12559,\"totalTokenCount\": 12559},\"modelVersion\": \"gemini-1.5-flash-002\"}\r\n\r\n"

    static let geminiSafetyMidStream =
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Sure, \"}],\"role\": \"model\"},\"index\": 0}],\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\n"
        + "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\"}],\"role\": \"model\"},\"finishReason\": \"SAFETY\",\"index\": 0,\"safetyRatings\": [{\"category\": \"HARM_CATEGORY_DANGEROUS_CONTENT\",\"probability\": \"HIGH\",\"blocked\": true}]}],\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\n"

    static let gemini429Body = """
        {
          "error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
              {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
              {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}
            ]
          }
        }
        """
    static let geminiDailyQuotaBody = #"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#
    static let geminiBadKeyBody = #"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#

    // MARK: Cohere v2 chat (SSE, event: lines matching the JSON type)

    static let cohereText = """
        event: message-start
        data: {"id":"29f14a5a","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}

        event: content-start
        data: {"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}

        event: content-delta
        data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Grüße"}}}}

        event: content-delta
        data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":" ✓ 🙂"}}}}

        event: content-end
        data: {"type":"content-end","index":0}

        event: message-end
        data: {"type":"message-end","delta":{"finish_reason":"MAX_TOKENS","usage":{"billed_units":{"input_tokens":5,"output_tokens":3},"tokens":{"input_tokens":71,"output_tokens":3}}}}


        """

    static let cohereToolCall = """
        event: message-start
        data: {"id":"a1","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}

        event: tool-plan-delta
        data: {"type":"tool-plan-delta","delta":{"message":{"tool_plan":"I will look up the weather."}}}

        event: tool-call-start
        data: {"type":"tool-call-start","index":0,"delta":{"message":{"tool_calls":{"id":"get_weather_776n8ctsgycn","type":"function","function":{"name":"get_weather","arguments":""}}}}}

        event: tool-call-delta
        data: {"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"{\\n    \\"city\\": \\"Zü"}}}}}

        event: tool-call-delta
        data: {"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"rich\\"\\n}"}}}}}

        event: tool-call-end
        data: {"type":"tool-call-end","index":0}

        event: message-end
        data: {"type":"message-end","delta":{"finish_reason":"TOOL_CALL","usage":{"billed_units":{"input_tokens":37,"output_tokens":19},"tokens":{"input_tokens":1052,"output_tokens":51}}}}


        """

    static let cohere429Body = #"{"id":"4a5c","message":"You are using a Trial key, which is limited to 10 API calls / minute. You can continue to use the Trial key for free or upgrade to a Production key with higher rate limits at 'https://dashboard.cohere.com/api-keys'."}"#

    // MARK: Ollama (NDJSON)

    static let ollamaChat = """
        {"model":"llama3.2","created_at":"2025-05-27T22:54:57.641643Z","message":{"role":"assistant","content":"Grüße"},"done":false}
        {"model":"llama3.2","created_at":"2025-05-27T22:54:57.651643Z","message":{"role":"assistant","content":" ✓ 🙂\\n"},"done":false}
        {"model":"llama3.2","created_at":"2025-05-27T22:54:57.661643Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"length","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":2,"eval_duration":4535599000}

        """

    static let ollamaToolCall = """
        {"model":"qwen3","created_at":"2025-05-27T22:54:57.641643Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_current_weather","arguments":{"format":"celsius","location":"Zürich"}}}]},"done":false}
        {"model":"qwen3","created_at":"2025-05-27T22:54:58.100509Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":2994281958,"load_duration":12345,"prompt_eval_count":207,"prompt_eval_duration":200000,"eval_count":34,"eval_duration":300000}

        """

    static let ollamaGenerate =
        "{\"model\":\"llama3.2\",\"created_at\":\"2025-10-26T17:15:24.097767Z\",\"response\":\"That\",\"done\":false}\r\n"
        + "{\"model\":\"llama3.2\",\"created_at\":\"2025-10-26T17:15:24.109172Z\",\"response\":\"'s ✓\",\"done\":false}\r\n"
        + "{\"model\":\"llama3.2\",\"created_at\":\"2025-10-26T17:15:24.166576Z\",\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"context\":[1,2,3],\"prompt_eval_count\":4,\"eval_count\":2}"

    static let ollamaErrorLine = """
        {"model":"llama3.2","created_at":"2025-10-26T17:15:24.097767Z","response":"Hi","done":false}
        {"error":"an error was encountered while running the model: unexpected EOF"}

        """

    static let ollama404Body = #"{"error":"model \"llama9\" not found, try pulling it first"}"#

    // MARK: TGI /generate_stream (data: without a space; a special EOS token last)

    static let tgiStream =
        "data:{\"index\":1,\"token\":{\"id\":8496,\"text\":\"Grüße\",\"logprob\":-0.39,\"special\":false},\"generated_text\":null,\"details\":null}\n\n"
        + "data:{\"index\":2,\"token\":{\"id\":12,\"text\":\" ✓ 🙂\",\"logprob\":-0.1,\"special\":false},\"generated_text\":null,\"details\":null}\n\n"
        + "data:{\"index\":3,\"token\":{\"id\":2,\"text\":\"</s>\",\"logprob\":-0.01,\"special\":true},\"generated_text\":\"Grüße ✓ 🙂\",\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":3,\"seed\":null,\"input_length\":7}}\n\n"

    static let tgiErrorEvent =
        "data:{\"index\":1,\"token\":{\"id\":8496,\"text\":\"Hi\",\"logprob\":-0.39,\"special\":false},\"generated_text\":null,\"details\":null}\n\n"
        + "data:{\"error\":\"Request failed during generation: Server error: CUDA out of memory\",\"error_type\":\"generation\"}\n\n"

    static let tgi422Body = #"{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 200 `max_new_tokens`","error_type":"validation"}"#

    // MARK: OpenAI error bodies

    static let openAIQuotaBody = #"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#
    static let openAIBadKeyBody = #"{"error":{"message":"Incorrect API key provided: sk-live-0123456789abcdef. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#
}
