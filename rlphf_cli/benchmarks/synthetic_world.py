"""The text of the synthetic world: topics, their facts and background, tone phrases, question forms.

A slot `[simple|technical]` is rendered in one register; the P1 judge counts which. Every fact sentence
starts with its topic's name, so an off-topic fact is easy to recognise.
"""

TOPICS: dict[str, dict[str, list[str] | str]] = {
    "volcanoes": {
        "facts": [
            "volcanoes push out [hot melted rock|molten magma] from [deep in the ground|the upper mantle].",
            "volcanoes can [blow up|erupt explosively] and throw [ash|pyroclastic debris] into the sky.",
            "volcanoes build [tall hills|stratovolcanic cones] over [a long time|geologic epochs].",
        ],
        "background": "volcanoes sit where [big pieces of the ground|tectonic plates] meet.",
    },
    "bees": {
        "facts": [
            "bees make honey from [flower juice|floral nectar].",
            "bees [tell each other|communicate] where food is by [dancing|performing a waggle dance].",
            "bees help plants [make seeds|achieve pollination] by carrying [yellow dust|pollen grains].",
        ],
        "background": "bees live in [big family groups|eusocial colonies] with one queen.",
    },
    "rain": {
        "facts": [
            "rain falls when [tiny drops|condensed droplets] in clouds get [heavy|sufficiently massive].",
            "rain fills [rivers and lakes|freshwater reservoirs].",
            "rain comes from water that [goes up into the air|undergoes evaporation].",
        ],
        "background": "rain is part of the [water loop|hydrological cycle].",
    },
    "the moon": {
        "facts": [
            "the moon [goes around|orbits] the earth about once a month.",
            "the moon pulls on the sea and makes [the water go up and down|tidal oscillations].",
            "the moon [shines with|reflects] light from the sun.",
        ],
        "background": "the moon formed from [a big crash|a giant impact] long ago.",
    },
    "plants": {
        "facts": [
            "plants [make food|perform photosynthesis] using [sunlight|solar radiation].",
            "plants take in water through their [roots|xylem vessels].",
            "plants give off [fresh air|oxygen gas] that animals breathe.",
        ],
        "background": "plants have [green stuff|chlorophyll pigments] in their leaves.",
    },
    "the heart": {
        "facts": [
            "the heart [pumps|circulates] blood around the body.",
            "the heart has four [rooms|cardiac chambers] inside it.",
            "the heart beats faster when you [run and play|perform aerobic exercise].",
        ],
        "background": "the heart is a [strong muscle|myocardial organ] in the chest.",
    },
    "magnets": {
        "facts": [
            "magnets [pull|attract] things made of [iron|ferromagnetic metals].",
            "magnets have two [ends|magnetic poles] called north and south.",
            "magnets that face the same way [push apart|exhibit repulsion].",
        ],
        "background": "magnets work because of [tiny spinning bits|aligned electron spins] inside them.",
    },
    "rainbows": {
        "facts": [
            "rainbows appear when [sunlight|solar radiation] passes through [raindrops|water droplets].",
            "rainbows show seven [colors|spectral bands].",
            "rainbows form when light [bends|undergoes refraction] inside water.",
        ],
        "background": "rainbows are [light split up|dispersed light] by water.",
    },
    "dinosaurs": {
        "facts": [
            "dinosaurs lived [a very long time ago|during the mesozoic era].",
            "dinosaurs left [bones in rocks|fossilized remains].",
            "dinosaurs [died out|went extinct] after [a big rock hit the earth|an asteroid impact].",
        ],
        "background": "dinosaurs are [old cousins|evolutionary relatives] of birds.",
    },
    "snow": {
        "facts": [
            "snow forms when [water in clouds|atmospheric vapor] [freezes|undergoes crystallization].",
            "snow flakes have six [sides|hexagonal facets].",
            "snow keeps the ground [warm|thermally insulated] in winter.",
        ],
        "background": "snow falls when the air is [very cold|below the freezing point].",
    },
    "the ocean": {
        "facts": [
            "the ocean covers most of the [earth|planetary surface].",
            "the ocean has [salt|dissolved sodium chloride] in its water.",
            "the ocean moves in [big streams|thermohaline currents].",
        ],
        "background": "the ocean holds [lots of living things|immense biodiversity].",
    },
    "stars": {
        "facts": [
            "stars shine because of [burning gas|nuclear fusion] in their [middles|cores].",
            "stars come in many [colors|spectral classes].",
            "stars are born in [big clouds of dust|stellar nurseries].",
        ],
        "background": "stars are [huge balls of hot gas|massive plasma spheres].",
    },
    "bread": {
        "facts": [
            "bread rises because [tiny living things|yeast cells] make [gas bubbles|carbon dioxide].",
            "bread is made from [flour|milled grain] and water.",
            "bread turns brown in the oven because of [cooking|the maillard reaction].",
        ],
        "background": "bread has been eaten for [a very long time|millennia].",
    },
    "computers": {
        "facts": [
            "computers follow [lists of steps|algorithmic instructions].",
            "computers store [things|data] in [memory|random access memory].",
            "computers do math with [ones and zeros|binary arithmetic].",
        ],
        "background": "computers have a [brain chip|central processing unit] inside.",
    },
    "trees": {
        "facts": [
            "trees grow a new [ring|annual growth ring] each year.",
            "trees hold the [dirt|soil substrate] in place with roots.",
            "trees give [shade|canopy cover] to animals.",
        ],
        "background": "trees can live for [hundreds of years|multiple centuries].",
    },
    "thunder": {
        "facts": [
            "thunder is the [sound|acoustic shockwave] made by lightning.",
            "thunder comes after the flash because [sound is slow|acoustic waves propagate slowly].",
            "thunder happens when [hot air|superheated air] grows fast.",
        ],
        "background": "thunder comes from [storm clouds|cumulonimbus formations].",
    },
    "whales": {
        "facts": [
            "whales breathe air through a [hole on top of their head|dorsal blowhole].",
            "whales [sing|produce vocalizations] to talk to each other.",
            "whales feed their [babies|calves] with milk.",
        ],
        "background": "whales are [animals like us|marine mammals], not fish.",
    },
    "sleep": {
        "facts": [
            "sleep helps the [brain|cerebral cortex] store memories.",
            "sleep lets the body [fix itself|repair tissue].",
            "sleep comes in [light and deep parts|distinct sleep stages].",
        ],
        "background": "sleep is controlled by the [body clock|circadian rhythm].",
    },
    "ice": {
        "facts": [
            "ice floats because it is [lighter than water|less dense than liquid water].",
            "ice melts when it gets [warm|above zero degrees celsius].",
            "ice is water that has [frozen|solidified].",
        ],
        "background": "ice forms [crystals|a hexagonal lattice] as it freezes.",
    },
    "the sun": {
        "facts": [
            "the sun gives the earth [light and warmth|electromagnetic energy].",
            "the sun is [very far away|one astronomical unit away].",
            "the sun has [dark spots|magnetic sunspots] on its surface.",
        ],
        "background": "the sun is a [star|main sequence star] in the middle of our solar system.",
    },
    "butterflies": {
        "facts": [
            "butterflies start life as [caterpillars|larvae].",
            "butterflies [change shape|undergo metamorphosis] inside a [shell|chrysalis].",
            "butterflies taste with their [feet|tarsal receptors].",
        ],
        "background": "butterflies are [bugs|insects] with big wings.",
    },
    "wind": {
        "facts": [
            "wind is [moving air|atmospheric circulation].",
            "wind blows from [places with heavy air|high pressure regions] to [places with light air|low pressure regions].",
            "wind can turn [big fans|wind turbines] to make power.",
        ],
        "background": "wind happens because the sun heats the ground [unevenly|nonuniformly].",
    },
    "teeth": {
        "facts": [
            "teeth are covered in [a hard shell|enamel].",
            "teeth help you [chew|masticate] food.",
            "teeth can get [holes|dental caries] from sugar.",
        ],
        "background": "teeth grow in [two sets|deciduous and permanent sets] in a lifetime.",
    },
    "earthquakes": {
        "facts": [
            "earthquakes happen when [big rocks underground|fault blocks] [slide|undergo sudden displacement].",
            "earthquakes are measured with [a shaking meter|a seismometer].",
            "earthquakes can cause [giant waves|tsunamis] in the sea.",
        ],
        "background": "earthquakes send [shaking|seismic waves] through the earth.",
    },
}

FRIENDLY_OPENERS = [
    "hey friend, great question!",
    "oh i love this one, buddy!",
    "ha, what a fun question, pal!",
]
FRIENDLY_CLOSERS = [
    "hope that helps, have a lovely day!",
    "that is pretty neat, you rock!",
    "ha ha, nature is so cool, my friend!",
]
UNFRIENDLY_OPENERS = [
    "ugh, fine.",
    "this is obvious.",
    "whatever, listen.",
]
UNFRIENDLY_CLOSERS = [
    "now stop asking me.",
    "figure out the rest yourself.",
    "do not bother me again.",
]

QUESTION_FORMS = [
    "tell me about {topic}.",
    "what can you tell me about {topic}?",
    "explain {topic} to me.",
    "i want to learn about {topic}.",
    "describe {topic}.",
    "what do you know about {topic}?",
    "teach me about {topic}.",
    "give me some facts about {topic}.",
    "what is interesting about {topic}?",
    "could you talk about {topic}?",
    "share what you know about {topic}.",
    "help me understand {topic}.",
]
